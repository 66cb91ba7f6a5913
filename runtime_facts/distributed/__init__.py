"""A distributed Airflow on one machine: Postgres, Redis, two Celery workers."""
