"""Jobs: one callable per operation, run by the CLI and by DAG tasks alike."""
