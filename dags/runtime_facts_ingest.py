"""The `runtime_facts_ingest` DAG, built in `runtime_facts.airflow.dags`."""

from runtime_facts.airflow.dags import runtime_facts_ingest

__all__ = ["runtime_facts_ingest"]
