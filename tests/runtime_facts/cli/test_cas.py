"""`cas put` of many files and folders, `cas put-graph`, `cas verify`: outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.stores.cas import sha256_hex
from tests.runtime_facts.cli.conftest import SUBJECT, Cli, write_batch


def _uri(path: Path) -> str:
    return f"cas://reachability/runtime/{sha256_hex(path.read_bytes())}"


def test_put_many_files_prints_one_uri_per_file_in_order(cli: Cli, tmp_path: Path) -> None:
    a = write_batch(tmp_path / "a.ndjson.gz", '{"symbolId":"a","hitCount":1}\n')
    b = write_batch(tmp_path / "b.ndjson.gz", '{"symbolId":"b","hitCount":1}\n')
    run = cli("cas", "put", str(b), str(a), *SUBJECT)
    assert run.code == 0, run.err
    assert run.out.splitlines() == [_uri(b), _uri(a)]
    assert "staged 2 of 2 files (2 new, 0 already staged)" in run.err


def test_a_folder_stands_for_its_batch_files_sorted(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "chunks"
    files = [write_batch(folder / f"{n}.ndjson.gz", f'{{"symbolId":"{n}","hitCount":1}}\n')
             for n in ("c", "a", "b")]  # fmt: skip
    (folder / "notes.txt").write_text("not a batch")
    write_batch(folder / "nested" / "d.ndjson.gz")  # not recursive
    run = cli("--json", "cas", "put", str(folder), *SUBJECT)
    assert run.code == 0, run.err
    docs = json.loads(run.out)
    assert [d["file"] for d in docs] == [str(p) for p in sorted(files)]
    assert [d["uri"] for d in docs] == [_uri(p) for p in sorted(files)]
    assert {d["subject_key"] for d in docs} == {"scan:s-1"}


def test_json_is_a_list_even_for_one_file(cli: Cli, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "a.ndjson.gz")
    docs = json.loads(cli("--json", "cas", "put", str(batch), *SUBJECT).out)
    assert [(d["uri"], d["created"]) for d in docs] == [(_uri(batch), True)]
    again = json.loads(cli("cas", "put", str(batch), *SUBJECT, "--json").out)
    assert [d["created"] for d in again] == [False]


def test_a_refused_file_exits_3_and_the_others_are_staged(
    cli: Cli, tmp_path: Path, home_dir: Path
) -> None:
    good = write_batch(tmp_path / "good.ndjson.gz")
    empty = tmp_path / "empty.ndjson.gz"
    empty.write_bytes(b"")
    run = cli("cas", "put", str(empty), str(good), *SUBJECT)
    assert run.code == 3
    assert run.out.splitlines() == [_uri(good)]
    assert f"refused {empty}: [empty_batch]" in run.err
    assert "staged 1 of 2 files (1 new, 0 already staged), 1 refused" in run.err
    home = Home(Settings.load(str(home_dir)))
    assert list(home.cas.list("runtime")) == [sha256_hex(good.read_bytes())]


def test_a_missing_file_exits_4_file_not_found_and_stages_nothing(
    cli: Cli, tmp_path: Path, home_dir: Path
) -> None:
    good = write_batch(tmp_path / "good.ndjson.gz")
    missing = tmp_path / "typo.ndjson.gz"
    run = cli("cas", "put", str(good), str(missing), *SUBJECT)
    assert run.code == 4
    assert run.err.startswith(f"error [file_not_found] no such file: {missing}\n")
    assert "cas_miss" not in run.err
    assert run.out == ""
    assert not (home_dir / "cas").exists()


def test_a_folder_without_batches_exits_4(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = cli("--json", "cas", "put", str(tmp_path / "empty"), *SUBJECT)
    assert run.code == 4
    assert json.loads(run.out)["error"] == "file_not_found"


def test_put_graph_of_a_missing_file_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("cas", "put-graph", str(tmp_path / "graph.json"), "--tenant", "acme")
    assert run.code == 4
    assert "[file_not_found]" in run.err


def test_verify_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("cas", "verify", "--all", home=tmp_path / "nonexistent")
    assert run.code == 4
    assert run.err.startswith(f"error [home_not_found] no home at {tmp_path / 'nonexistent'}")
    assert "checked 0 objects" not in run.out


def test_verify_on_an_empty_existing_home_is_ok(cli: Cli, home_dir: Path) -> None:
    home_dir.mkdir()
    run = cli("cas", "verify", "--all")
    assert (run.code, run.out) == (0, "checked 0 objects: ok\n")
