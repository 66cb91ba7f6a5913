"""In-process DuckDB connections that never reach the network (air-gapped sites)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

OFFLINE_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,
}


def offline_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory connection that installs and loads no extension (the statically linked
    ones, json/parquet/icu, are all it needs) and only sees the relations registered on it."""
    import duckdb  # imported here: a fold of this process's own commits never needs it

    return duckdb.connect(":memory:", config=dict(OFFLINE_CONFIG))
