"""The edges: where bytes and tables live (local directory or S3-compatible object store)."""
