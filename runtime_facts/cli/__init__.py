"""The `runtime-facts` command line; the app and entry point are in `runtime_facts.cli.main`."""
