"""Isolation for every test: a private environment and home under tmp_path."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime_facts.config import Settings
from runtime_facts.environment import reserve_airflow_context
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXED_NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session", autouse=True)
def _stable_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every variable a test routinely sets exists from the start of the session.

    Adding a variable reallocates the C environment array, and a native thread that reads it
    then (polars' workers call getenv constantly) reads freed memory and crashes the process
    with SIGSEGV: the intermittent crash of this suite (docs/reliability.md). Replacing a value
    is safe, so tests replace values and the per-test restore below writes only what differs.
    """
    os.environ.setdefault("RUNTIME_FACTS_HOME", str(tmp_path_factory.mktemp("no-home") / "home"))
    reserve_airflow_context()  # dag.test() exports AIRFLOW_CTX_* in this process


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("RUNTIME_FACTS") and key != "RUNTIME_FACTS_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RUNTIME_FACTS_HOME", str(tmp_path / "home"))
    yield
    restore_environment(saved)


def restore_environment(saved: dict[str, str]) -> None:
    """Undo what code under test wrote to os.environ, touching only the variables that differ
    (never `clear()` + `update()`: that re-adds every variable, see `_stable_environment`)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


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
