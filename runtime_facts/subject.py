"""Subject context (SPEC §2): who a batch belongs to and how its subject key is formed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime_facts.errors import Reason, UsageError

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ID_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\%=]|\.\.")
_MAX_ID = 256


def validate_tenant(tenant: str) -> str:
    """Return the tenant if it matches SPEC §2, else raise a usage error."""
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant) or ".." in tenant:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"invalid tenant {tenant!r}",
            hint="tenants are lower-case [a-z0-9][a-z0-9._-]{0,63}",
        )
    return tenant


def validate_id(name: str, value: str, *, allow_slash: bool = False) -> str:
    """Reject ids that could escape a path or confuse a partition (/, .., %, =, NUL, controls)."""
    bad = _ID_FORBIDDEN.search(value) if isinstance(value, str) else None
    if allow_slash and bad and bad.group() == "/":
        bad = re.search(r"[\x00-\x1f\x7f\\%=]|\.\.", value)
    if not isinstance(value, str) or not value or len(value) > _MAX_ID or bad:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"invalid {name} {value!r}",
            hint=f"{name} must be 1-{_MAX_ID} characters without '/', '..', '%', '=', or controls",
        )
    return value


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
