"""Pure polars / DuckDB transforms: no IO, no clock, no airflow."""
