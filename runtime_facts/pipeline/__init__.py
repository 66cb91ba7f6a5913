"""The ingest pipeline: stage, prepare, commit, fold, score, publish; one path for CLI and DAGs."""
