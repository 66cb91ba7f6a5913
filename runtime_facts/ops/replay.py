"""Replay manifests (SPEC §7, §9): record what a subject's facts derive from, re-derive them.

`record_manifest` cites every batch folded into one (tenant, callgraphId, subject) and the
current callgraph of that callgraphId, by hash and CAS URI (sorted by `casUri`), with the
digests of the resulting rows. `replay` copies the cited objects from CAS alone into a scratch
home, stages the graph and ingests the batches with the normal pipeline (which folds and
recomputes states) on a fixed clock, and compares digests.

`factsDigest` is `transforms.canonical.digest_rows` of the subject's rows (rows sorted, one
JSON object per line with sorted keys, timestamps ISO-8601 UTC with `Z`); `statesDigest` is
the order-independent `transforms.lthash` digest of the same canonical rows (`lthash16:…`),
the digest the re-score keeps up to date row by row. Both leave out the columns that are the
same on every row of a subject (`tenant`, `callgraph_id`, `subject_key`) and those that record
when or how often the home did the work rather than what it derived
(`runtime_facts.updated_at`; `reachability_states.computed_at` and `fact_version`). So
`statesDigest` equals the `digest` of the subject's latest `signals.fact.updated.v1` event.
No rows is the empty document: `sha256:e3b0c442…b855`, and the zero state for `lthash16`.
A manifest recorded before states digests were LtHash digests has a `sha256:` statesDigest;
replay re-derives that one with `digest_rows`, so old manifests still replay.

The section also records the validation limits the home used (`limits`: the `ingest`
settings that decide whether a line or batch is accepted, such as `max_line_bytes`), and
`replay` re-derives with those limits rather than the current settings: a later change of
`RUNTIME_FACTS__INGEST__MAX_LINE_BYTES` cannot make a replay differ silently. A manifest
recorded before limits were recorded replays with the current settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from runtime_facts.config import IngestSettings, load_section
from runtime_facts.errors import NotFoundError, Reason, RejectedError, UsageError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.score import STATE_DIGEST_EXCLUDE, recompute
from runtime_facts.stores.cas import Kind, cas_uri, parse_cas_uri
from runtime_facts.stores.graphs import current_graph_sha, stage_graph
from runtime_facts.subject import SubjectContext, parse_subject_key, validate_tenant
from runtime_facts.trusted_json import load_trusted
from transforms import lthash
from transforms.canonical import digest_rows
from transforms.schema import SUBJECT

SCHEMA_VERSION = "2.0"
SECTIONS = ("reachability",)
FIXED_CLOCK = datetime(1970, 1, 1, tzinfo=UTC)
FACTS_EXCLUDE = (*SUBJECT, "updated_at")
STATES_EXCLUDE = (*SUBJECT, *STATE_DIGEST_EXCLUDE)
HELD = ("replay", "held")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_STATES_DIGEST_RE = re.compile(r"^(sha256|lthash16):[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The ingest settings that decide what a batch's facts are (policy flags are per run).
LIMITS = (
    "max_batch_bytes",
    "max_decompressed_bytes",
    "max_compression_ratio",
    "max_line_bytes",
    "max_nesting_depth",
    "max_number_digits",
)


EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()


def _subject_rows(home: Home, table: str, tenant: str, callgraph_id: str, key: str) -> pl.DataFrame:
    where = (pl.col("callgraph_id") == callgraph_id) & (pl.col("subject_key") == key)
    return home.lake.read(table, tenant=tenant, where=where)


def facts_digest(home: Home, tenant: str, callgraph_id: str, subject_key: str) -> str:
    """Digest of the subject's `runtime_facts` rows (see the module docstring)."""
    if not home.lake.exists():
        return EMPTY_DIGEST
    rows = _subject_rows(home, "runtime_facts", tenant, callgraph_id, subject_key)
    return digest_rows(rows, exclude=FACTS_EXCLUDE) if rows.height else EMPTY_DIGEST


def states_digest(
    home: Home, tenant: str, callgraph_id: str, subject_key: str, *, kind: str = lthash.PREFIX
) -> str:
    """Digest of the subject's `reachability_states` rows (see the module docstring), as
    `lthash16:` (the default) or as the `sha256:` of older manifests."""
    if not home.lake.exists():
        return lthash.digest(lthash.empty()) if kind == lthash.PREFIX else EMPTY_DIGEST
    rows = _subject_rows(home, "reachability_states", tenant, callgraph_id, subject_key)
    if kind == lthash.PREFIX:
        return lthash.digest(lthash.of(rows, exclude=STATES_EXCLUDE))
    return digest_rows(rows, exclude=STATES_EXCLUDE) if rows.height else EMPTY_DIGEST


def subject_from_key(subject_key: str) -> dict[str, str]:
    """`scan:s-1` → `{"scanId": "s-1"}` (the inverse of `SubjectContext.subject_key`)."""
    return parse_subject_key(subject_key)


def _cite(kind: Kind, sha: str) -> dict[str, str]:
    return {"hash": f"sha256:{sha}", "hashAlg": "sha256", "casUri": cas_uri(kind, sha)}


def record_manifest(
    home: Home, *, tenant: str, callgraph_id: str, subject_key: str, out: Path
) -> dict[str, Any]:
    """Write the replay manifest of one subject (same home state, same bytes).

    Args:
        home: the home whose tables and CAS are cited.
        tenant: the subject's tenant.
        callgraph_id: the callgraph the facts belong to.
        subject_key: e.g. `scan:s-42`.
        out: where to write the manifest.

    Returns:
        The manifest document.

    Raises:
        NotFoundError: no tables, no batch for that subject, or a cited object is not in CAS.
    """
    validate_tenant(tenant)
    subject = subject_from_key(subject_key)
    if not home.lake.exists():
        raise NotFoundError(Reason.NO_TABLES, f"no tables under {home.root}: nothing ingested yet")
    batches = (
        home.lake.scan("runtime_fact_batches", tenant=tenant)
        .filter((pl.col("callgraph_id") == callgraph_id) & (pl.col("subject_key") == subject_key))
        .select("batch_sha256")
        .unique()
        .collect()
        .get_column("batch_sha256")
        .to_list()
    )
    if not batches:
        raise NotFoundError(
            Reason.UNKNOWN_SUBJECT,
            f"no ingested batch for {subject_key!r} / {callgraph_id!r} of tenant {tenant!r}",
            hint="check the subject key and callgraph id with `runtime-facts facts list`",
        )
    for sha in batches:
        if not home.cas.exists("runtime", sha):
            raise NotFoundError(
                Reason.CAS_MISS,
                f"{cas_uri('runtime', sha)} is cited by the facts but missing from CAS",
                hint="restore the object (re-stage the batch or reload its kit) before recording",
            )
    graphs = []
    graph_sha = current_graph_sha(home, tenant, callgraph_id)
    if graph_sha is not None:
        if not home.cas.exists("graphs", graph_sha):
            raise NotFoundError(
                Reason.CAS_MISS,
                f"{cas_uri('graphs', graph_sha)}, the current graph of {callgraph_id!r}, "
                "is missing from CAS",
                hint="stage the callgraph again: runtime-facts cas put-graph FILE --tenant T",
            )
        graphs.append(_cite("graphs", graph_sha))
    doc = {
        "schemaVersion": SCHEMA_VERSION,
        "tenant": tenant,
        "callgraphId": callgraph_id,
        "subject": subject,
        "subjectKey": subject_key,
        "reachability": {
            "graphs": sorted(graphs, key=lambda c: c["casUri"]),
            "runtimeTraces": sorted(
                (_cite("runtime", sha) for sha in batches), key=lambda c: c["casUri"]
            ),
            "factsDigest": facts_digest(home, tenant, callgraph_id, subject_key),
            "statesDigest": states_digest(home, tenant, callgraph_id, subject_key),
            "limits": recorded_limits(home.settings.ingest),
        },
    }
    _atomic_write(out, _dumps(doc))
    return doc


def recorded_limits(ingest_settings: IngestSettings) -> dict[str, int]:
    """The validation limits a manifest records (see the module docstring)."""
    return {name: int(getattr(ingest_settings, name)) for name in LIMITS}


def _limits(path: Path, body: dict[str, Any]) -> dict[str, int] | None:
    limits = body.get("limits")
    if limits is None:
        return None
    if not isinstance(limits, dict) or set(limits) != set(LIMITS):
        raise _invalid(path, f"reachability.limits must be an object of {', '.join(LIMITS)}")
    for name, value in limits.items():
        if type(value) is not int or value < 1:
            raise _invalid(path, f"reachability.limits.{name} must be a positive integer")
    return {str(k): int(v) for k, v in limits.items()}


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def hold_manifest(home: Home, manifest_path: Path, name: str | None = None) -> Path:
    """Keep a manifest under `<home>/replay/held/` so retention spares every object it cites."""
    manifest = load_manifest(manifest_path)
    raw = manifest_path.read_bytes()
    name = name or f"{manifest.context.tenant}-{hashlib.sha256(raw).hexdigest()[:16]}"
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"invalid hold name {name!r}",
            hint="use letters, digits, '.', '_' and '-' (at most 128 characters)",
        )
    target = home.path(*HELD, f"{name}.json")
    _atomic_write(target, raw)
    return target


def _invalid(path: Path, message: str) -> RejectedError:
    return RejectedError(
        Reason.REPLAY_MANIFEST_INVALID,
        f"{path}: {message}",
        hint="record the manifest again with `runtime-facts replay record`",
    )


def _citations(path: Path, section: dict[str, Any], name: str, kind: Kind) -> list[str]:
    items = section.get(name)
    if not isinstance(items, list):
        raise _invalid(path, f"reachability.{name} must be a list")
    shas: list[str] = []
    for i, item in enumerate(items):
        where = f"reachability.{name}[{i}]"
        if not isinstance(item, dict) or item.get("hashAlg") != "sha256":
            raise _invalid(path, f"{where} must be an object with hashAlg 'sha256'")
        try:
            cited_kind, sha = parse_cas_uri(str(item.get("casUri")))
        except UsageError as exc:
            raise _invalid(path, f"{where}: {exc.message}") from exc
        if cited_kind != kind or item.get("hash") != f"sha256:{sha}":
            raise _invalid(path, f"{where}: hash and casUri disagree, or wrong object kind")
        shas.append(sha)
    uris = [cas_uri(kind, s) for s in shas]
    if uris != sorted(set(uris)):
        raise _invalid(path, f"reachability.{name} is not sorted by casUri without repeats")
    if kind == "graphs" and len(shas) > 1:
        raise _invalid(path, "replay needs one graph per callgraphId (the current one)")
    return shas


@dataclass(frozen=True)
class ReplayManifest:
    """A checked replay manifest: the document, its subject and the cited digests."""

    doc: dict[str, Any]
    context: SubjectContext
    runtime: list[str]
    graphs: list[str]
    limits: dict[str, int] | None = None


def load_manifest(path: Path, section: str = "reachability") -> ReplayManifest:
    """Read and check a replay manifest.

    Raises:
        NotFoundError: no such file. UsageError: an unsupported section.
        RejectedError: `replay_manifest_invalid`, naming the field.
    """
    if section not in SECTIONS:
        raise UsageError(
            Reason.REPLAY_SECTION_UNSUPPORTED,
            f"section {section!r} cannot be replayed",
            hint=f"supported sections: {', '.join(SECTIONS)}",
        )
    try:
        doc = load_trusted(path.read_bytes(), str(path))
    except FileNotFoundError as exc:
        raise NotFoundError(
            Reason.REPLAY_MANIFEST_MISSING,
            f"no replay manifest at {path}",
            hint="write one with `runtime-facts replay record ... --out FILE`",
        ) from exc
    except ValueError as exc:
        raise _invalid(path, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schemaVersion") != SCHEMA_VERSION:
        raise _invalid(path, f"not a replay manifest with schemaVersion {SCHEMA_VERSION!r}")
    body = doc.get(section)
    if not isinstance(body, dict):
        raise _invalid(path, f"no {section!r} section")
    try:
        validate_tenant(doc.get("tenant"))  # type: ignore[arg-type]
        key = doc.get("subjectKey")
        ctx = SubjectContext.from_json({**doc, "subject": doc.get("subject")})
    except UsageError as exc:
        raise _invalid(path, exc.message) from exc
    if key is not None and key != ctx.subject_key:
        raise _invalid(path, f"subjectKey {key!r} does not match subject {doc.get('subject')}")
    for name, pattern, form in (
        ("factsDigest", _DIGEST_RE, "'sha256:'"),
        ("statesDigest", _STATES_DIGEST_RE, "'lthash16:' or 'sha256:'"),
    ):
        if not isinstance(body.get(name), str) or not pattern.fullmatch(body[name]):
            raise _invalid(path, f"{section}.{name} must be {form} + 64 hex digits")
    return ReplayManifest(
        doc=doc,
        context=ctx,
        runtime=_citations(path, body, "runtimeTraces", "runtime"),
        graphs=_citations(path, body, "graphs", "graphs"),
        limits=_limits(path, body),
    )


@dataclass
class ReplayReport:
    """Recorded versus replayed digests of one manifest section."""

    manifest: str
    section: str
    tenant: str
    callgraph_id: str
    subject_key: str
    runtime_traces: int
    graphs: int
    recorded: dict[str, str]
    replayed: dict[str, str]
    limits: dict[str, int] = field(default_factory=dict)
    limits_source: str = "manifest"
    mismatches: list[str] = field(default_factory=list)
    rejected_batches: list[dict[str, Any]] = field(default_factory=list)
    scratch: str | None = None

    @property
    def ok(self) -> bool:
        """True when every digest was reproduced exactly."""
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {**asdict(self), "ok": self.ok}


@contextlib.contextmanager
def _scratch_root(scratch: Path | None) -> Iterator[Path]:
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="runtime-facts-replay-") as tmp:
            yield Path(tmp)
        return
    if scratch.exists() and any(scratch.iterdir()):
        raise UsageError(
            Reason.KIT_OUTPUT_EXISTS,
            f"scratch folder {scratch} is not empty",
            hint="replay into a new or empty folder (or omit --scratch for a temporary one)",
        )
    scratch.mkdir(parents=True, exist_ok=True)
    yield scratch


def _copy_batch(source: Home, target: Home, sha: str) -> None:
    data = source.cas.get("runtime", sha)  # NotFoundError on a miss, RejectedError when altered
    context = source.cas.context("runtime", sha)
    try:
        subject = SubjectContext.from_json(context)
    except UsageError as exc:
        raise RejectedError(
            Reason.INVALID_CONTEXT,
            f"the context sidecar of {cas_uri('runtime', sha)} is malformed: {exc.message}",
            hint="the sidecar was altered; restore it from the batch's origin",
        ) from exc
    target.cas.put("runtime", data, subject)


def _stage_graph(source: Home, target: Home, root: Path, tenant: str, sha: str) -> None:
    data = source.cas.get("graphs", sha)
    path = root / f"graph-{sha}"
    path.write_bytes(data)
    stage_graph(target, path, tenant, FIXED_CLOCK)


def replay(
    manifest_path: Path,
    *,
    source: Home,
    scratch: Path | None = None,
    section: str = "reachability",
) -> ReplayReport:
    """Re-derive a manifest section from CAS alone and compare its digests.

    Args:
        manifest_path: the replay manifest.
        source: the home whose CAS holds the cited objects (its tables are not read).
        scratch: where to build the scratch home (kept); default a temporary folder (removed).
        section: only `reachability`.

    Returns:
        The report; `mismatches` names each digest that differs.

    Raises:
        NotFoundError: the manifest or a cited object (or its context sidecar) is missing.
        RejectedError: the manifest is malformed, or a cited object no longer hashes to its
            address.
    """
    manifest = load_manifest(manifest_path, section)
    ctx = manifest.context
    body = manifest.doc[section]
    with _scratch_root(scratch) as root:
        settings = source.settings.replace(home=str(root / "home"))
        if manifest.limits is not None:
            limits = {**settings.ingest.to_dict(), **manifest.limits}
            settings = settings.replace(ingest=load_section(IngestSettings, limits))
        target = Home(settings)
        for sha in manifest.runtime:
            _copy_batch(source, target, sha)
        for sha in manifest.graphs:
            _stage_graph(source, target, root, ctx.tenant, sha)
        clock = lambda: FIXED_CLOCK  # noqa: E731 - nothing may depend on wall time
        # Partial mode reproduces strict and partial acceptances alike: a strictly accepted
        # batch has no bad line to quarantine.
        summary = ingest(target, manifest.runtime, allow_partial=True, sealed=False, clock=clock)
        recompute(target, ctx.tenant, ctx.callgraph_id, ctx.subject_key, FIXED_CLOCK)
        recorded_kind = str(body["statesDigest"]).split(":", 1)[0] + ":"
        replayed = {
            "factsDigest": facts_digest(target, ctx.tenant, ctx.callgraph_id, ctx.subject_key),
            "statesDigest": states_digest(
                target, ctx.tenant, ctx.callgraph_id, ctx.subject_key, kind=recorded_kind
            ),
        }
    recorded = {k: str(body[k]) for k in ("factsDigest", "statesDigest")}
    return ReplayReport(
        manifest=str(manifest_path),
        section=section,
        tenant=ctx.tenant,
        callgraph_id=ctx.callgraph_id,
        subject_key=ctx.subject_key,
        runtime_traces=len(manifest.runtime),
        graphs=len(manifest.graphs),
        recorded=recorded,
        replayed=replayed,
        limits=recorded_limits(target.settings.ingest),
        limits_source="manifest" if manifest.limits is not None else "current settings",
        mismatches=[k for k in recorded if recorded[k] != replayed[k]],
        rejected_batches=[
            {"batch_sha256": o.batch_sha256, "reason_codes": o.reason_codes, "detail": o.detail}
            for o in summary.outcomes
            if o.status == "rejected"
        ],
        scratch=str(scratch) if scratch is not None else None,
    )
