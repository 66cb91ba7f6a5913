"""Isolation for every test: a private environment and home under tmp_path."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXED_NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("RUNTIME_FACTS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RUNTIME_FACTS_HOME", str(tmp_path / "home"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh, empty home under tmp_path."""
    return Home(Settings.load(str(tmp_path / "home")))


@pytest.fixture
def fixtures_dir() -> Path:
    """The repository's fixtures folder."""
    return FIXTURES


@pytest.fixture
def ctx() -> SubjectContext:
    """A default subject context."""
    return SubjectContext("acme", "cg-1", scan_id="s-1")


@pytest.fixture
def stage(home: Home, ctx: SubjectContext) -> Callable[..., str]:
    """Stage raw NDJSON text (gzipped here) or gzip bytes; returns the digest."""

    def _stage(
        data: bytes | str, context: SubjectContext | None = None, *, raw: bool = False
    ) -> str:
        payload = data.encode() if isinstance(data, str) else data
        if not raw:
            payload = gzip.compress(payload, mtime=0)
        return home.cas.put("runtime", payload, context or ctx).sha256

    return _stage


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """A fixed clock."""
    return lambda: FIXED_NOW
