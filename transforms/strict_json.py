"""Strict JSON for documents the product trusts: an object may not name a key twice.

Most parsers keep the last of two equal keys, some the first; a document a signer read one way
and a verifier another must not pass. `json.loads` with a pairs hook sees every key.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKeyError(ValueError):
    """An object of the document names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears twice in one object")
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON; `DuplicateKeyError` for a repeated key, `ValueError` for anything invalid
    (including NaN / Infinity, which JSON does not have)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return json.loads(data, object_pairs_hook=_unique, parse_constant=_no_constant)
