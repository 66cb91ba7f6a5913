"""DuckDB connections used by the transforms stay offline."""

from __future__ import annotations

import duckdb
import pytest

from transforms.duck import offline_connection


def test_offline_connection_loads_nothing_from_outside() -> None:
    con = offline_connection()
    try:
        settings = dict(
            con.sql(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('autoinstall_known_extensions', 'autoload_known_extensions')"
            ).fetchall()
        )
        assert settings == {
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
        # an extension that is not built in is named, not fetched
        with pytest.raises(duckdb.CatalogException, match="excel extension"):
            con.execute("SELECT * FROM read_xlsx('book.xlsx')")
    finally:
        con.close()
