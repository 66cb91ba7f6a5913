"""runtime-facts: batch ETL for runtime reachability evidence."""

from typing import TYPE_CHECKING

from runtime_facts.environment import limit_blas_threads, tune_allocator

tune_allocator()  # before polars and numpy load: see runtime_facts.environment
limit_blas_threads()

if TYPE_CHECKING:  # at run time both are computed on first use, see __getattr__
    from runtime_facts.analyst.query import read_table as read_table

    __version__: str


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runtime-facts")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+source"


def __getattr__(name: str) -> object:
    """`__version__` and `read_table`, on first use: importlib.metadata costs a tenth of a
    second at every start, `read_table` pulls in polars and deltalake."""
    if name == "__version__":
        value = _version()
        globals()["__version__"] = value
        return value
    if name == "read_table":
        from runtime_facts.analyst.query import read_table

        return read_table
    raise AttributeError(f"module 'runtime_facts' has no attribute {name!r}")
