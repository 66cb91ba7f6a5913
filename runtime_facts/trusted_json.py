"""Read a JSON document the product trusts (manifests, sidecars, token files, graph records)."""

from __future__ import annotations

from typing import Any

from runtime_facts.errors import Reason, RejectedError
from transforms.strict_json import DuplicateKeyError, loads_strict


def load_trusted(raw: bytes | str, what: str, *, hint: str = "") -> Any:
    """Parse strictly: `duplicate_json_key` (RejectedError, exit 3) when an object repeats a
    key; any other defect is a ValueError for the caller to name in its own terms."""
    try:
        return loads_strict(raw)
    except DuplicateKeyError as exc:
        raise RejectedError(
            Reason.DUPLICATE_JSON_KEY,
            f"{what}: {exc}",
            hint=hint or "a trusted document names each key once; regenerate it",
        ) from exc
