"""The shell examples of README.md and docs/runbook.md work as written.

Every ```bash block carries one mark after the language:

* `run`: run by this test. A document's `run` blocks run in order in one bash session
  (`set -euo pipefail`), from a fresh copy of the repository's folder, with the PATH of a
  plain shell and nothing of runtime-facts or Airflow in the environment, as a newcomer
  following the document would. A `# -> TEXT` line says the block prints a line containing
  TEXT (`<name>` stands for one word, `...` for anything).
* `needs=airflow`, `needs=s3`, `needs=long`, `needs=values`: not run here, reported as
  skipped with the reason: it needs a running Airflow deployment, an object store, minutes
  of work (the demo and the suite, which their own tests cover), or values only the reader
  has (a synopsis with a digest or a path to fill in).

A block without a mark fails `test_every_shell_example_is_marked`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/runbook.md")
SHELLS = {"bash", "sh", "shell"}
NEEDS = {
    "airflow": "a running Airflow deployment",
    "s3": "an object store and its credentials",
    "long": "minutes of work (covered by its own tests)",
    "values": "values to fill in (a digest, a path): a synopsis",
}
# Local state of a working copy that a newcomer's clone does not have.
NOT_IN_A_CLONE = {".git", "var", "airflow-home", "test-artifacts", ".cache", "batches"}
EXPECT = re.compile(r"^\s*# -> (.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    doc: str
    line: int
    lang: str
    marks: tuple[str, ...]
    code: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    """The fenced code blocks of a document, with the line of their opening fence."""
    found, current, body = [], None, []
    for number, line in enumerate((REPO / doc).read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                info = line[3:].split()
                current = (number, info[0] if info else "", tuple(info[1:]))
                body = []
            else:
                found.append(Block(doc, current[0], current[1], current[2], "\n".join(body)))
                current = None
        elif current is not None:
            body.append(line)
    return found


def shell_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.lang in SHELLS]


def need(block: Block) -> str | None:
    return next((m.removeprefix("needs=") for m in block.marks if m.startswith("needs=")), None)


def pattern(text: str) -> re.Pattern[str]:
    """`<name>` matches one word, `...` anything, the rest literally."""
    parts = re.split(r"(<[^>]+>|\.\.\.)", text)
    return re.compile(
        "".join(
            r"\S+" if p.startswith("<") else ".*" if p == "..." else re.escape(p) for p in parts
        )
    )


def clone_view(tmp_path: Path) -> Path:
    """A folder that looks like a fresh clone: the repository's files, none of its state."""
    clone = tmp_path / "runtime-facts"
    clone.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in NOT_IN_A_CLONE:
            (clone / entry.name).symlink_to(entry)
    return clone


def test_every_shell_example_is_marked() -> None:
    unmarked = [
        b.where
        for b in shell_blocks()
        if not ("run" in b.marks or (need(b) in NEEDS and len(b.marks) == 1))
    ]

    assert unmarked == [], "mark each ```bash block `run` or `needs=airflow|s3|long|values`"
    assert any("run" in b.marks for b in shell_blocks() if b.doc == "README.md")
    assert any("run" in b.marks for b in shell_blocks() if b.doc == "docs/runbook.md")


def test_expected_output_patterns() -> None:
    assert pattern("cas://reachability/runtime/<sha256>").fullmatch(
        "cas://reachability/runtime/3b1f09"
    )
    assert not pattern("cas://reachability/runtime/<sha256>").fullmatch("cas://x/3b1f")
    assert pattern("batches 1 (accepted 1, ...)").fullmatch("batches 1 (accepted 1, rejected 0)")


@pytest.mark.parametrize(
    "block",
    [b for b in shell_blocks() if need(b) in NEEDS],
    ids=lambda b: b.where,
)
def test_examples_that_need_infrastructure_are_skipped_by_name(block: Block) -> None:
    pytest.skip(f"{block.where} needs {NEEDS[str(need(block))]}")


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_the_runnable_examples_work_as_written(doc: str, tmp_path: Path) -> None:
    runnable = [b for b in blocks(doc) if b.lang in SHELLS and "run" in b.marks]
    clone = clone_view(tmp_path)
    script = ["set -euo pipefail"]
    for block in runnable:
        script += [f"echo '@@ {block.where}'", f"echo '@@ {block.where}' >&2", block.code]
    user = tmp_path / "user"
    user.mkdir()

    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "\n".join(script)],
        cwd=clone,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(user),
            "TMPDIR": str(user),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )

    sections = {}
    for part in result.stdout.split("@@ ")[1:]:
        where, _, printed = part.partition("\n")
        sections[where] = printed
    last = list(sections)[-1] if sections else "before the first block"
    assert result.returncode == 0, (
        f"{last} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )
    assert list(sections) == [b.where for b in runnable]
    for block in runnable:
        printed = sections[block.where].splitlines()
        for line in block.code.splitlines():
            if m := EXPECT.match(line):
                assert any(pattern(m.group(1)).search(p) for p in printed), (
                    f"{block.where}: no line like {m.group(1)!r} in:\n{sections[block.where]}"
                )
