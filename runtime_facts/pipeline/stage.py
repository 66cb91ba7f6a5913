"""Stage batches and callgraphs in CAS, and verify what is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime_facts.errors import NotFoundError, Reason, RejectedError, UsageError
from runtime_facts.home import Home
from runtime_facts.stores.cas import Kind, PutResult
from runtime_facts.subject import SubjectContext


def stage_batch(home: Home, path: Path, context: SubjectContext) -> PutResult:
    """Store a batch file's exact bytes in CAS with its subject context sidecar.

    Args:
        home: target home.
        path: the `.ndjson.gz` batch file.
        context: tenant, callgraph and subject the batch belongs to.

    Returns:
        The CAS address; `created` is False when the bytes were already staged.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(Reason.CAS_MISS, f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise UsageError(Reason.INVALID_CONTEXT, f"{path} is a directory") from exc
    if not data:
        raise RejectedError(Reason.EMPTY_BATCH, f"{path} is empty")
    limit = home.settings.ingest.max_batch_bytes
    if len(data) > limit:
        raise RejectedError(
            Reason.BATCH_TOO_LARGE,
            f"{path} is {len(data)} bytes; batches are at most {limit} bytes compressed",
            hint="split it into smaller chunks",
        )
    return home.cas.put("runtime", data, context)


@dataclass
class VerifyReport:
    """Outcome of rehashing CAS objects."""

    checked: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, sha, reason)

    @property
    def ok(self) -> bool:
        """True when every object hashed to its address."""
        return not self.bad


def verify_cas(
    home: Home, shas: list[str] | None = None, on_object: Callable[[], None] | None = None
) -> VerifyReport:
    """Rehash CAS objects (all of them, or the given runtime digests) and check their sidecars."""
    report = VerifyReport()
    targets: list[tuple[Kind, str]]
    if shas is None:
        targets = [("runtime", s) for s in home.cas.list("runtime")]
        targets += [("graphs", s) for s in home.cas.list("graphs")]
    else:
        targets = [("runtime", s) for s in shas]
    for kind, sha in targets:
        report.checked += 1
        try:
            home.cas.get(kind, sha)
            home.cas.verify_context(kind, sha)
        except (RejectedError, NotFoundError, UsageError) as exc:
            report.bad.append((kind, sha, exc.reason))
        if on_object:
            on_object()
    return report
