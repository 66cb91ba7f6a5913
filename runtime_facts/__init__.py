"""runtime-facts: batch ETL for runtime reachability evidence."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("runtime-facts")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
