"""Subject context (SPEC §2): who a batch belongs to and how its subject key is formed."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from runtime_facts.errors import Reason, UsageError
from transforms.text import forbidden_character

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_MAX_ID = 256
# `/` and `\\` (paths), `%` and `=` (partition values) anywhere; `@` in a version, so that
# `component:<name>@<version>` splits at its last `@` and no two contexts share a key.
_SEPARATORS = re.compile(r"[/\\%=]")
_VERSION_SEPARATORS = re.compile(r"[/\\%=@]")
ID_RULE = (
    "1-256 characters, no leading or trailing whitespace, not '.' or '..' and no '..' inside, "
    "no '/', '\\', '%', '=', no control or invisible character, in Unicode NFC"
)


def validate_tenant(tenant: str) -> str:
    """Return the tenant if it matches SPEC §2, else raise a usage error."""
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant) or ".." in tenant:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"invalid tenant {tenant!r}",
            hint="tenants are lower-case [a-z0-9][a-z0-9._-]{0,63}",
        )
    return tenant


def id_problem(name: str, value: object, *, allow_slash: bool = False) -> str | None:
    """Why `value` is not a valid id (see `ID_RULE`), or None when it is.

    With `allow_slash` (component names such as `pkg:npm/left-pad`) `/` separates segments,
    none of which may be empty, `.` or `..`; the id never becomes a path, but stays unambiguous.
    """
    if not isinstance(value, str):
        return f"{name} must be a string"
    if not value or not value.strip():
        return f"{name} is empty"
    if len(value) > _MAX_ID:
        return f"{name} is longer than {_MAX_ID} characters"
    if value != value.strip():
        return f"{name} has leading or trailing whitespace"
    point = forbidden_character(value)
    if point is not None:
        return f"{name} holds a control or invisible character ({point})"
    if not unicodedata.is_normalized("NFC", value):
        return f"{name} is not in Unicode NFC (composed) form"
    if value in (".", "..") or ".." in value:
        return f"{name} is or holds '..' or is '.'"
    pattern = _VERSION_SEPARATORS if name == "version" else _SEPARATORS
    found = pattern.search(value.replace("/", "") if allow_slash else value)
    if found is not None:
        return f"{name} holds {found.group()!r}"
    if allow_slash and any(part in ("", ".") for part in value.split("/")):
        return f"{name} has an empty or '.' segment between '/'"
    return None


def validate_id(name: str, value: str, *, allow_slash: bool = False) -> str:
    """Return `value` when it is a valid id (`ID_RULE`), else raise `invalid_context`."""
    problem = id_problem(name, value, allow_slash=allow_slash)
    if problem is not None:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"invalid {name} {value!r}: {problem}",
            hint=f"{name} must be {ID_RULE}" + (" ('@' neither)" if name == "version" else ""),
        )
    return value


def parse_subject_key(key: str) -> dict[str, str]:
    """The subject naming a key stands for: the inverse of `SubjectContext.subject_key`."""
    kind, sep, rest = key.partition(":")
    if sep and rest and kind == "image":
        return {"imageDigest": rest}
    if sep and rest and kind == "scan":
        return {"scanId": rest}
    component, at, version = rest.rpartition("@")
    if sep and kind == "component" and at and component and version:
        return {"component": component, "version": version}
    raise UsageError(
        Reason.INVALID_CONTEXT,
        f"not a subject key: {key!r}",
        hint="subject keys look like image:<digest>, scan:<id> or component:<name>@<version>",
    )


@dataclass(frozen=True)
class SubjectContext:
    """The per-batch context: tenant, callgraph and one way of naming the subject."""

    tenant: str
    callgraph_id: str
    image_digest: str | None = None
    scan_id: str | None = None
    component: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        validate_tenant(self.tenant)
        validate_id("callgraphId", self.callgraph_id)
        if self.image_digest is not None:
            validate_id("imageDigest", self.image_digest)
        if self.scan_id is not None:
            validate_id("scanId", self.scan_id)
        if self.component is not None:
            validate_id("component", self.component, allow_slash=True)
        if self.version is not None:
            validate_id("version", self.version)
        if (self.component is None) != (self.version is None) and not (
            self.image_digest or self.scan_id
        ):
            raise UsageError(Reason.INVALID_CONTEXT, "component and version go together")
        if not (self.image_digest or self.scan_id or (self.component and self.version)):
            raise UsageError(
                Reason.INVALID_CONTEXT,
                "a subject is required",
                hint="give --image-digest, --scan-id, or --component with --version",
            )

    @property
    def subject_key(self) -> str:
        """`image:<digest>`, else `scan:<id>`, else `component:<name>@<version>` (SPEC §2)."""
        if self.image_digest:
            return f"image:{self.image_digest}"
        if self.scan_id:
            return f"scan:{self.scan_id}"
        return f"component:{self.component}@{self.version}"

    def subject(self) -> dict[str, str]:
        """The subject part as it appears in sidecars, kits and manifests."""
        out: dict[str, str] = {}
        if self.image_digest:
            out["imageDigest"] = self.image_digest
        if self.scan_id:
            out["scanId"] = self.scan_id
        if self.component:
            out["component"] = self.component
        if self.version:
            out["version"] = self.version
        return out

    def to_json(self) -> dict[str, Any]:
        """Sidecar form (camelCase, as probes and kits spell it)."""
        return {
            "tenant": self.tenant,
            "callgraphId": self.callgraph_id,
            "subject": self.subject(),
            "subjectKey": self.subject_key,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SubjectContext:
        """Parse a sidecar / manifest entry; raises UsageError on anything malformed."""
        try:
            subject = doc.get("subject") or {}
            if not isinstance(subject, dict):
                raise TypeError("subject is not an object")
            return cls(
                tenant=doc["tenant"],
                callgraph_id=doc["callgraphId"],
                image_digest=subject.get("imageDigest"),
                scan_id=subject.get("scanId"),
                component=subject.get("component"),
                version=subject.get("version"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UsageError(Reason.INVALID_CONTEXT, f"malformed subject context: {exc}") from exc
