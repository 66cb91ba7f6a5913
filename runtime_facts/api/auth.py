"""Bearer tokens: the token file holds sha256 hashes only; lookups compare in constant time.

Token file: `{"tokens": [{"sha256": "<hex>", "tenant": "acme", "scopes": [...], "name": "..."}]}`.
It is re-read when it changes on disk, so `runtime-facts serve token add` needs no restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from runtime_facts.api.errors import ApiError
from runtime_facts.errors import Reason
from runtime_facts.subject import TENANT_RE
from transforms.strict_json import DuplicateKeyError, loads_strict

SCOPE_WRITE = "signals.runtime:write"
SCOPE_READ = "signals:read"
SCOPE_RECOMPUTE = "signals.reachability:recompute"
SCOPES = (SCOPE_WRITE, SCOPE_READ, SCOPE_RECOMPUTE)
TOKEN_PREFIX = "rtf_"


class TokenFileError(ValueError):
    """The token file is missing or malformed (the server is then not ready)."""

    def __init__(self, message: str, reason: str = "token_file_invalid") -> None:
        super().__init__(f"[{reason}] {message}" if reason != "token_file_invalid" else message)
        self.reason = reason


def hash_token(token: str) -> str:
    """Hex sha256 of a token, as stored in the token file."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One token's hash and grants."""

    sha256: str
    tenant: str
    scopes: frozenset[str]
    name: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: one tenant (`*` only when anonymous access is on) and scopes."""

    tenant: str
    scopes: frozenset[str]
    name: str | None = None

    def require(self, scope: str, tenant: str | None = None) -> None:
        """403 unless the principal holds `scope` (and acts for `tenant`, when given)."""
        if scope not in self.scopes:
            raise ApiError(403, Reason.INSUFFICIENT_SCOPE, f"this token lacks the scope {scope}")
        if tenant is not None and self.tenant not in ("*", tenant):
            raise ApiError(
                403, Reason.TENANT_MISMATCH, f"this token is not valid for tenant {tenant!r}"
            )


def parse_token_file(raw: bytes) -> list[TokenEntry]:
    """Parse and check a token file; TokenFileError says what is wrong (never a token)."""
    try:
        doc = loads_strict(raw)
    except DuplicateKeyError as exc:
        raise TokenFileError(f"token file: {exc}", Reason.DUPLICATE_JSON_KEY) from exc
    except ValueError as exc:
        raise TokenFileError(f"token file is not JSON: {exc}") from exc
    items = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise TokenFileError('token file must be {"tokens": [...]}')
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TokenFileError(f"tokens[{i}] is not an object")
        sha, tenant, scopes = item.get("sha256"), item.get("tenant"), item.get("scopes")
        if not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            raise TokenFileError(f"tokens[{i}].sha256 must be 64 lower-case hex digits")
        if not (isinstance(tenant, str) and TENANT_RE.fullmatch(tenant)):
            raise TokenFileError(f"tokens[{i}].tenant is not a valid tenant")
        if not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)):
            raise TokenFileError(f"tokens[{i}].scopes must be a list of strings")
        name = item.get("name")
        entries.append(
            TokenEntry(sha, tenant, frozenset(scopes), name if isinstance(name, str) else None)
        )
    return entries


class TokenStore:
    """The configured tokens, reloaded when the file changes."""

    def __init__(self, path: Path | None, *, allow_anonymous: bool = False) -> None:
        self.path = path
        self.allow_anonymous = allow_anonymous
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[TokenEntry] = []

    def entries(self) -> list[TokenEntry]:
        """Current entries; TokenFileError when there is no usable file."""
        if self.path is None:
            raise TokenFileError("no token file configured (serve.token_file)")
        try:
            st = self.path.stat()
        except OSError as exc:
            raise TokenFileError(f"token file unreadable: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                try:
                    raw = self.path.read_bytes()
                except OSError as exc:
                    raise TokenFileError(f"token file unreadable: {exc.strerror}") from exc
                self._entries = parse_token_file(raw)
                self._stamp = stamp
            return self._entries

    def problem(self) -> str | None:
        """Why authentication cannot work, or None (readiness)."""
        if self.allow_anonymous and self.path is None:
            return None
        try:
            self.entries()
        except TokenFileError as exc:
            return str(exc)
        return None

    def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token: 401 without or with an unknown token."""
        if token is None:
            if self.allow_anonymous:
                return Principal("*", frozenset(SCOPES), "anonymous")
            raise _unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
        try:
            entries = self.entries()
        except TokenFileError as exc:
            raise ApiError(
                503, Reason.UNAUTHENTICATED, f"authentication unavailable: {exc}"
            ) from exc
        digest = hash_token(token)
        found: TokenEntry | None = None
        for entry in entries:  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(entry.sha256, digest) and found is None:
                found = entry
        if found is None:
            raise _unauthenticated("unknown bearer token")
        return Principal(found.tenant, found.scopes, found.name)


def _unauthenticated(message: str) -> ApiError:
    return ApiError(
        401, Reason.UNAUTHENTICATED, message, headers={"WWW-Authenticate": 'Bearer realm="signals"'}
    )


def add_token(path: Path, tenant: str, scopes: list[str], name: str | None = None) -> str:
    """Create a random token, append its hash to the token file (atomically), return it once."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {unknown}; choose from {', '.join(SCOPES)}")
    if not TENANT_RE.fullmatch(tenant):
        raise ValueError(f"invalid tenant {tenant!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry: dict[str, object] = {"sha256": hash_token(token), "tenant": tenant, "scopes": scopes}
    if name:
        entry["name"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # two `token add` at once must not lose one
        doc: dict[str, list[dict[str, object]]] = {"tokens": []}
        if path.exists():
            parse_token_file(path.read_bytes())  # refuse to rewrite a file we cannot read
            doc = orjson.loads(path.read_bytes())
        doc["tokens"].append(entry)
        _write_private(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return token


def _write_private(path: Path, data: bytes) -> None:
    """Atomic replace with mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
