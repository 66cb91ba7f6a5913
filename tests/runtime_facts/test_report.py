"""The HTML report: every chart present, self-contained, deterministic, and rendered by Chromium."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime_facts.analyst.report import CHARTS, build_report, write_report
from runtime_facts.analyst.svg import nice_ticks
from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext
from tests.runtime_facts.analyst_fixtures import FixtureHome, shared_fixture_home

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# What each chart must draw: the SVG element class that carries its data.
MARKS = {
    "events-per-day": "point",
    "batches-per-day": "bar",
    "rejected-lines-by-reason": "bar",
    "rejected-batches-by-reason": "bar",
    "states-per-subject": "bar",
    "top-symbols": "bar",
}
runner = CliRunner()


class Charts(HTMLParser):
    """Collects each `<svg data-chart>` and the classes of the elements inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[str]] = {}
        self.current: str | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append(tag)
        if tag == "svg" and found.get("data-chart"):
            self.current = str(found["data-chart"])
            self.charts[self.current] = []
        elif self.current and found.get("class"):
            self.charts[self.current].append(str(found["class"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.current = None


def _charts(page: str) -> Charts:
    parser = Charts()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> FixtureHome:
    return shared_fixture_home(tmp_path_factory)


def _small_home(root: Path, *, recompute: bool = True) -> Home:
    home = Home(Settings.load(str(root)))
    data = gzip.compress(b'{"symbolId":"sym:a","hitCount":3}\n', mtime=0)
    home.cas.put("runtime", data, SubjectContext("acme", "cg-1", scan_id="s-1"))
    ingest(home, clock=lambda: NOW, recompute=recompute)
    return home


def test_every_chart_is_drawn_with_its_marks(facts: FixtureHome) -> None:
    charts = _charts(build_report(facts.home, tenant=None, now=NOW)).charts
    assert sorted(charts) == sorted(CHARTS)
    for chart, mark in MARKS.items():
        assert charts[chart].count(mark) >= 1, chart


def test_volume_has_one_point_per_day(facts: FixtureHome) -> None:
    page = build_report(facts.home, tenant=None, now=NOW)
    points = _charts(page).charts["events-per-day"].count("point")
    assert points == 2  # 2026-11-24 and 2026-11-25
    assert "2026-11-24 accepted events: 11" in page  # 5 + 3 + 3 lines of the day's batches


def test_report_is_deterministic(facts: FixtureHome) -> None:
    first = build_report(facts.home, tenant="acme", now=NOW)
    assert build_report(facts.home, tenant="acme", now=NOW) == first


def test_report_is_self_contained(facts: FixtureHome) -> None:
    page = build_report(facts.home, tenant=None, now=NOW)
    tags = set(_charts(page).tags)
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    links = re.findall(r"(?:https?|ftp|file)://[^\s\"'<>]+", page)
    assert set(links) == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert "url(" not in page
    assert "@import" not in page


def test_tenant_report_shows_only_that_tenant(facts: FixtureHome) -> None:
    page = build_report(facts.home, tenant="globex", now=NOW)
    assert "sym:go:ledger" in page
    assert "sym:java" not in page
    assert "tenant globex" in page


def test_states_section_says_when_there_are_none(tmp_path: Path) -> None:
    page = build_report(_small_home(tmp_path / "h", recompute=False), tenant=None, now=NOW)
    assert "no states yet" in page
    assert "states-per-subject" not in _charts(page).charts
    assert "no rejections" in page


def test_chain_status_ok_and_first_broken_link(tmp_path: Path) -> None:
    home = _small_home(tmp_path / "h")
    assert 'data-chain="ok"' in build_report(home, tenant=None, now=NOW)
    log = home.receipts.path
    doc = json.loads(log.read_text().splitlines()[0])
    doc["accepted_count"] = 1000
    log.write_text(json.dumps(doc) + "\n")
    page = build_report(home, tenant=None, now=NOW)
    assert 'data-chain="broken"' in page
    assert "broken at line 1: receipt_sha256 does not match" in page


def test_nice_ticks() -> None:
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(3) == [0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(26) == [0.0, 10.0, 20.0, 30.0]
    assert nice_ticks(1005) == [0.0, 500.0, 1000.0, 1500.0]


def test_cli_report(facts: FixtureHome, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    result = runner.invoke(
        app,
        [
            "--home",
            str(facts.home.root),
            "--json",
            "report",
            "--tenant",
            "acme",
            "--out",
            str(target),
        ],
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["path"] == str(target)
    assert sorted(info["charts"]) == sorted(CHARTS)
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_cli_report_on_an_empty_home_exits_4(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--home", str(tmp_path / "none"), "report", "--out", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 4


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed: run scripts/ensure-chromium.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _chromium_args(profile: Path) -> list[str]:
    return [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
    ]


def test_report_renders_in_headless_chromium(facts: FixtureHome, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "report.html"
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    write_report(facts.home, page, tenant=None, now=NOW)
    url = page.resolve().as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes caches under $HOME

    subprocess.run(
        [*_chromium_args(tmp_path / "profile-shot"), f"--screenshot={shot}", url],
        check=True, capture_output=True, timeout=180, env=env,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a blank page compresses to a few hundred bytes

    dumped = subprocess.run(
        [*_chromium_args(tmp_path / "profile-dom"), "--dump-dom", url],
        check=True, capture_output=True, text=True, timeout=180, env=env,
    ).stdout  # fmt: skip
    (ARTIFACTS / "report.dom.html").write_text(dumped)
    rendered = _charts(dumped).charts
    assert sorted(rendered) == sorted(CHARTS)
    for chart, mark in MARKS.items():
        assert rendered[chart].count(mark) >= 1, chart
    assert 'data-chain="ok"' in dumped
