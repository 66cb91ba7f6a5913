"""`serve` and `serve token add` from the command line: default port, busy port, --json."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runtime_facts.config import Settings
from tests.runtime_facts.cli.conftest import Cli

EXE = Path(sys.executable).with_name("runtime-facts")
ADD = ("serve", "token", "add", "--tenant", "acme", "--scope", "signals:read")


def test_the_default_port_is_not_airflows() -> None:
    assert Settings.load(None).serve.port == 8765


def test_token_add_without_a_token_file_names_the_setting(cli: Cli) -> None:
    run = cli(*ADD)
    assert run.code == 2
    assert run.err.startswith("error [no_token_file] no token file:")
    assert "RUNTIME_FACTS__SERVE__TOKEN_FILE" in run.err
    assert "--token-file PATH (created if missing)" in run.err


def test_token_add_uses_the_setting(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    monkeypatch.setenv("RUNTIME_FACTS__SERVE__TOKEN_FILE", str(path))
    run = cli(*ADD)
    assert run.code == 0, run.err
    assert json.loads(path.read_text())["tokens"][0]["tenant"] == "acme"


def test_a_busy_port_exits_2_port_in_use(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        run = cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert run.code == 2
    assert run.err.startswith(f"error [port_in_use] 127.0.0.1:{port} is already in use")


def test_serve_json_prints_the_bound_address_then_serves(tmp_path: Path) -> None:
    env = {**os.environ, "RUNTIME_FACTS_HOME": str(tmp_path / "home")}
    args = [str(EXE), "serve", "--port", "0", "--json", "--log-level", "warning"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1] != b"}\n":  # one indented JSON document
            line = proc.stdout.readline()
            assert line, "serve exited before printing its address"
            lines.append(line)
        doc = json.loads(b"".join(lines))
        assert doc["host"] == "127.0.0.1"
        assert doc["port"] > 0
        assert doc["url"] == f"http://127.0.0.1:{doc['port']}"
        resp = httpx.get(doc["url"] + "/healthz", timeout=30)
        assert resp.status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
