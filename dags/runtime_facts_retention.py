"""The `runtime_facts_retention` DAG, built in `runtime_facts.airflow.dags`."""

from runtime_facts.airflow.dags import runtime_facts_retention

__all__ = ["runtime_facts_retention"]
