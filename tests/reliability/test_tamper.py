"""Tamper evidence: an altered CAS object is refused unread; any edit of the receipts log shows."""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.home import Home
from runtime_facts.ops.receipts_verify import verify_receipts
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.graphs import stage_graph
from runtime_facts.stores.receipts import ReceiptLog, seal_receipt, verify_chain
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import GOOD_BATCH, GOOD_FACTS, facts_summary, receipts_of

Clock = Callable[[], datetime]
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")
SEED = 7
runner = CliRunner()


def _gz(text: bytes) -> bytes:
    return gzip.compress(text, mtime=0)


def _object(home: Home, kind: str, sha: str) -> Path:
    return home.root / "cas" / "reachability" / kind / sha


def _verify_all(home: Home) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["--home", str(home.root), "--json", "cas", "verify", "--all"])
    return result.exit_code, orjson.loads(result.output)


# --- CAS objects ------------------------------------------------------------------------------


def _flip(data: bytes, where: str, rng: random.Random) -> bytes:
    out = bytearray(data)
    pos = {"first": 0, "last": len(out) - 1, "random": rng.randrange(len(out))}[where]
    out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


@pytest.mark.parametrize(
    "alter",
    ["flip-first", "flip-last", "flip-random", "truncate", "append", "swap-with-another"],
)
def test_an_altered_cas_object_is_refused_before_parsing(
    alter: str, home: Home, clock: Clock
) -> None:
    rng = random.Random(SEED)
    hostile = home.cas.put("runtime", _gz(b'{"symbolId":"sym:tampered","hitCount":1}\n'), CTX)
    other = home.cas.put("runtime", _gz(b'{"symbolId":"sym:other","hitCount":1}\n'), CTX)
    path = _object(home, "runtime", hostile.sha256)
    data = path.read_bytes()
    if alter.startswith("flip"):
        data = _flip(data, alter.removeprefix("flip-"), rng)
    elif alter == "truncate":
        data = data[: len(data) // 2]
    elif alter == "append":
        data += b"\x00"
    else:
        data = _object(home, "runtime", other.sha256).read_bytes()
    path.write_bytes(data)
    good = home.cas.put("runtime", _gz(GOOD_BATCH), CTX).sha256

    ingest(home, [hostile.sha256, good], clock=clock)

    [receipt] = receipts_of(home, hostile.sha256)
    assert (receipt["status"], receipt["reason_codes"]) == ("rejected", ["cas_digest_mismatch"])
    assert (receipt["line_count"], receipt["decompressed_bytes"]) == (0, 0)  # never parsed
    assert facts_summary(home) == GOOD_FACTS  # the good batch landed, nothing else
    code, report = _verify_all(home)
    assert code == 3
    assert report["bad"] == [["runtime", hostile.sha256, "cas_digest_mismatch"]]


def test_cas_verify_all_passes_on_an_intact_store_and_fails_on_any_altered_object(
    home: Home, tmp_path: Path, clock: Clock
) -> None:
    batch = home.cas.put("runtime", _gz(GOOD_BATCH), CTX).sha256
    graph_file = tmp_path / "g.json"
    graph_file.write_bytes(
        orjson.dumps(
            {"schema": "runtime-facts.callgraph.v1", "callgraphId": "cg-1", "language": "java",
             "nodes": [{"id": "sym:good:a"}], "edges": [], "entrypoints": ["sym:good:a"]}
        )
    )  # fmt: skip
    graph = stage_graph(home, graph_file, "acme", clock()).sha256
    ingest(home, clock=clock)
    assert _verify_all(home) == (0, {"checked": 2, "ok": True, "bad": []})
    for kind, sha in (("graphs", graph), ("runtime", batch)):
        path = _object(home, kind, sha)
        original = path.read_bytes()
        path.write_bytes(_flip(original, "random", random.Random(sha)))
        code, report = _verify_all(home)
        assert code == 3
        assert report["bad"] == [[kind, sha, "cas_digest_mismatch"]]
        path.write_bytes(original)
    assert _verify_all(home)[0] == 0


# --- the receipts chain -----------------------------------------------------------------------


@pytest.fixture
def log(home: Home, clock: Clock) -> list[bytes]:
    """A real log of 7 receipts (accepted, rejected, duplicate), as raw lines."""
    for i in range(5):
        text = f'{{"symbolId":"s{i}","hitCount":{i + 1}}}\n' if i != 2 else '{"hitCount":1}\n'
        home.cas.put("runtime", _gz(text.encode()), CTX)
    ingest(home, clock=clock)
    again = next(iter(home.cas.list("runtime")))
    ingest(home, [again], clock=clock)
    ingest(home, [again], clock=clock)
    lines = home.receipts.path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 7
    assert _break(lines) is None
    return lines


def _break(lines: list[bytes]) -> int | None:
    _, found = verify_chain(iter(lines))
    return None if found is None else found.line_number


def test_changing_any_single_byte_of_any_receipt_breaks_the_chain(log: list[bytes]) -> None:
    rng = random.Random(SEED)
    for i, line in enumerate(log):
        positions = sorted({*rng.sample(range(len(line) - 1), 40), 0, len(line) - 2})
        for pos in positions:
            for new in {rng.randrange(256), line[pos] ^ 0x20, ord("0")} - {line[pos], 10}:
                edited = bytearray(line)
                edited[pos] = new
                lines = [*log[:i], bytes(edited), *log[i + 1 :]]
                assert _break(lines) == i + 1, (i, pos, bytes([line[pos]]), bytes([new]))


def test_deleting_any_receipt_breaks_the_chain_or_the_table_check(
    log: list[bytes], home: Home
) -> None:
    for i in range(len(log) - 1):
        assert _break([*log[:i], *log[i + 1 :]]) == i + 1
    # the last line leaves a valid (shorter) chain: the mirror in ingest_receipts catches it
    assert _break(log[:-1]) is None
    home.receipts.path.write_bytes(b"".join(log[:-1]))
    report = verify_receipts(home)
    assert not report.ok
    assert report.first_break is not None
    assert report.first_break.reason_code == "receipts_table_mismatch"


def test_reordering_any_two_receipts_breaks_the_chain(log: list[bytes]) -> None:
    for i in range(len(log)):
        for j in range(i + 1, len(log)):
            lines = list(log)
            lines[i], lines[j] = lines[j], lines[i]
            assert _break(lines) == i + 1


def test_edits_that_parse_to_the_same_receipt_still_break_the_chain(tmp_path: Path) -> None:
    """A keyless chain hashes the parsed receipt; the bytes must be its canonical form too."""
    log = ReceiptLog(tmp_path / "r.log")
    for seconds in (2.0, 3.5):
        log.append({"batch_sha256": "x", "status": "accepted", "duration_ms": seconds})
    lines = log.path.read_bytes().splitlines(keepends=True)
    assert b'"duration_ms":2.0' in lines[0]
    same_value = [lines[0].replace(b'"duration_ms":2.0', b'"duration_ms":2e0'), lines[1]]
    spaced = [lines[0].replace(b'"status":', b'"status": '), lines[1]]
    blank = [lines[0], b"\n", lines[1]]
    assert orjson.loads(same_value[0]) == orjson.loads(lines[0])
    assert _break(same_value) == 1
    assert _break(spaced) == 1
    assert _break(blank) == 2
    assert _break([*lines, b"\n"]) is None  # a trailing newline added by a copy is no edit


def test_a_rewritten_chain_is_caught_by_the_table_mirror(log: list[bytes], home: Home) -> None:
    """Whoever can recompute every hash can forge a chain; `ingest_receipts` still disagrees."""
    docs = [orjson.loads(line) for line in log]
    rejected = next(i for i, d in enumerate(docs) if d["status"] == "rejected")
    docs[rejected]["status"] = "accepted"
    prev = "0" * 64
    forged = []
    for doc in docs:
        sealed = seal_receipt(doc, prev)
        prev = sealed["receipt_sha256"]
        forged.append(orjson.dumps(sealed, option=orjson.OPT_SORT_KEYS) + b"\n")
    assert _break(forged) is None  # the chain alone cannot tell
    home.receipts.path.write_bytes(b"".join(forged))
    report = verify_receipts(home)
    assert report.first_break is not None
    assert report.first_break.reason_code == "receipts_table_mismatch"
    assert report.first_break.sequence == rejected + 1
