"""The `reachability_recompute` DAG, built in `runtime_facts.airflow.dags`."""

from runtime_facts.airflow.dags import reachability_recompute

__all__ = ["reachability_recompute"]
