"""The `runtime_facts_airgap_backfill` DAG, built in `runtime_facts.airflow.dags`."""

from runtime_facts.airflow.dags import runtime_facts_airgap_backfill

__all__ = ["runtime_facts_airgap_backfill"]
