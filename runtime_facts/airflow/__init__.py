"""Airflow glue: the assets, one task-group factory, and the four DAGs built from them.

Nothing here imports the pipeline at module level: DAG files must parse in milliseconds,
and every task body is one call into `runtime_facts.pipeline` or `runtime_facts.ops`.
"""
