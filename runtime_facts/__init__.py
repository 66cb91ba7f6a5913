"""runtime-facts: batch ETL for runtime reachability evidence."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time it is imported on first use, see __getattr__
    from runtime_facts.analyst.query import read_table as read_table

try:
    __version__ = version("runtime-facts")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"


def __getattr__(name: str) -> object:
    """`runtime_facts.read_table`, imported on first use (it pulls in polars and deltalake)."""
    if name == "read_table":
        from runtime_facts.analyst.query import read_table

        return read_table
    raise AttributeError(f"module 'runtime_facts' has no attribute {name!r}")
