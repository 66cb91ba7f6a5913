"""HTTP staging endpoint for probes: POST batches into CAS, read facts, trigger recomputes."""

from __future__ import annotations

from runtime_facts.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
