"""One typed settings object: env `RUNTIME_FACTS__SECTION__KEY`, home `RUNTIME_FACTS_HOME`.

The sections are `msgspec` structs: `Settings.load()` reads the environment once and converts
every value to its field's type (`"3"` to 3, `"true"` to True), and a value that does not
convert stops with `invalid_setting` naming the variable. msgspec imports in ~0.03 s where
pydantic-settings took ~0.15-0.2 s, on every command and task.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Self, TypeVar

import msgspec
import orjson

from runtime_facts.errors import Reason, UsageError

KIB = 1024
MIB = 1024 * KIB
ENV_PREFIX = "RUNTIME_FACTS__"
HOME_VARIABLES = ("RUNTIME_FACTS_HOME", "RUNTIME_FACTS__HOME")
"""Where the home comes from, the first set one winning."""


class SecretStr:
    """A value that is never printed: `str()`, `repr()` and dumps show `**********`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _decode(kind: type, value: Any) -> Any:
    if kind is SecretStr and isinstance(value, str):
        return SecretStr(value)
    raise NotImplementedError


def _encode(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return str(value)
    raise NotImplementedError


class Section(msgspec.Struct, kw_only=True):
    """A group of settings; unknown keys are ignored, values convert to the field types."""

    @classmethod
    def validate(cls, data: Mapping[str, Any]) -> Self:
        """This section from a mapping (strings convert: `"3"`, `"true"`).

        Raises:
            msgspec.ValidationError: a value does not convert, or is out of range.
        """
        return msgspec.convert(dict(data), cls, strict=False, dec_hook=_decode)

    def replace(self, **changes: Any) -> Self:
        """A copy with these fields changed (not re-validated: pass typed values)."""
        return msgspec.structs.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, secrets masked."""
        out: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_encode)
        return out


_S = TypeVar("_S", bound=Section)


class IngestSettings(Section):
    """Limits and policy for validating and ingesting batches."""

    max_batch_bytes: int = 10 * MIB
    """Largest compressed batch accepted (SPEC §1: 10 MiB)."""
    max_decompressed_bytes: int = 512 * MIB
    """Hard cap on decompressed bytes per batch: a gzip bomb stops here."""
    max_compression_ratio: int = 200
    """Decompressed/compressed ratio above which a batch is a bomb (checked past 16 MiB)."""
    max_line_bytes: int = 256 * 1024
    """Longest NDJSON line accepted (`line_too_long`)."""
    max_nesting_depth: int = 32
    """Deepest JSON nesting accepted in one event (`nesting_too_deep`)."""
    max_number_digits: int = 64
    """Longest numeric literal accepted (`number_too_long`)."""
    allow_partial: bool = False
    """Quarantine bad lines and ingest the rest, instead of rejecting the whole batch."""
    sealed: bool = False
    """Sealed mode: only batches with a verified CAS digest (and signed kits) are accepted."""
    workers: int = 2
    """Batches validated in parallel by one `ingest` process."""
    lock_lease_seconds: float = 120.0
    """Lease of a commit-domain lock on an object-store home; renewed every third of it while
    held. A holder that could not renew for three quarters of it stops writing."""


class ScoreSettings(Section):
    """Reachability lattice score constants (SPEC §5)."""

    weight_unreachable: float = 0.0
    weight_entrypoint: float = 1.0
    weight_runtime: float = 0.45
    weight_direct: float = 0.85
    weight_unknown: float = 0.5
    direct_max_path_length: int = 2
    confidence_reachable: float = 0.75
    runtime_bonus: float = 0.15
    confidence_unreachable: float = 0.25
    confidence_min: float = 0.05
    confidence_max: float = 0.99
    min_observation_window_days: float = 7.0
    """A node without hits is RuntimeUnobserved only after this much observed time."""


class RetentionSettings(Section):
    """How long facts and CAS objects are kept (SPEC §7)."""

    retention_days: int = 30
    """Facts are kept hot while `last_observed_at` is newer than this."""
    cas_retention_days: int = 180
    """CAS objects older than this are deleted unless still referenced."""


class OfflineSettings(Section):
    """Offline-kit verification."""

    public_key: str | None = None
    """Ed25519 public key (base64 raw or PEM path) that kit signatures are checked against."""


class S3Settings(Section):
    """Object-store access for an `s3://` home."""

    aws_conn_id: str | None = None
    """Airflow Connection (type `aws`) that supplies the endpoint and credentials when set:
    login = access key id, password = secret key, extra `endpoint_url`, `region_name`,
    `aws_session_token`. Unset: the standard `AWS_*` variables (what the CLI uses)."""


class ReceiptsSettings(Section):
    """The receipts log's signed checkpoints and provenance (docs/airgap.md)."""

    signing_key: str | None = None
    """Site signing key: path of an Ed25519 private key file (`runtime-facts offline keygen`).
    When set, the log carries DSSE-signed checkpoints and every accepted batch gets a signed
    in-toto provenance statement under `receipts/provenance/`."""
    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 100
    """Receipts of one tenant's chain between two checkpoints (besides one per ingest run)."""


class ServeSettings(Section):
    """The staging endpoint (`runtime-facts serve`)."""

    host: str = "127.0.0.1"
    """Interface the HTTP server binds to."""
    port: int = 8765
    """TCP port of the HTTP server (not 8080, the Airflow UI's port)."""
    token_file: str | None = None
    """JSON file of bearer-token hashes, tenants and scopes (docs/staging-endpoint.md)."""
    allow_anonymous: bool = False
    """Accept requests without a token (local development only; never ready in sealed mode)."""
    body_timeout_seconds: float = 30.0
    """A stalled upload (no body bytes for this long) is answered 408 and closed."""
    max_plain_bytes: int = 64 * MIB
    """Largest uncompressed body accepted; gzip (Content-Encoding) lets up to the batch cap in."""
    max_concurrency: int = 128
    """Uploads staged at once; past it an upload gets 503 `server_busy`. Only requests whose
    head arrived and whose token was accepted count, so slow or unauthenticated clients
    cannot take a slot."""
    max_connections: int = 1024
    """Open connections at once; past it a new connection gets 503 `too_many_connections`."""
    header_timeout_seconds: float = 10.0
    """The whole request head must arrive within this long of the connection (or of the
    previous response); otherwise 408 `header_timeout` and the connection is closed."""
    max_header_bytes: int = 16 * KIB
    """Largest request head (request line and header fields); past it 431
    `headers_too_large`, and no more of it is read."""
    max_header_count: int = 64
    """Most header fields in one request; past it 431 `too_many_headers`."""
    keep_alive_seconds: int = 5
    """An idle keep-alive connection is closed after this long."""
    airflow_api_url: str | None = None
    """Airflow base URL: recompute triggers the `reachability_recompute` DAG there."""
    airflow_token: SecretStr | None = None
    """Bearer token for the Airflow REST API (never logged)."""
    airflow_timeout_seconds: float = 10.0
    """Timeout of one call to the Airflow REST API."""


class AirflowSettings(Section):
    """The Airflow that schedules ingestion, told through its REST API when a batch is staged."""

    api_url: str | None = None
    """Airflow's base URL (e.g. `http://127.0.0.1:8080`); unset: staging announces nothing
    and the ingest DAG's cron fallback picks the batches up."""
    username: str | None = None
    """User that `POST /auth/token` exchanges for a short-lived JWT (asset-event permission)."""
    password: SecretStr | None = None
    """That user's password (never logged)."""
    timeout_seconds: float = 10.0
    """Timeout of one call to the Airflow REST API."""


class Settings(Section):
    """All runtime-facts settings; built inside jobs and tasks, never at DAG parse time."""

    home: str = "./var"
    """Where all state lives: a local directory or `s3://bucket/prefix`
    (`RUNTIME_FACTS_HOME`, or `RUNTIME_FACTS__HOME`)."""
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    score: ScoreSettings = msgspec.field(default_factory=ScoreSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    offline: OfflineSettings = msgspec.field(default_factory=OfflineSettings)
    s3: S3Settings = msgspec.field(default_factory=S3Settings)
    receipts: ReceiptsSettings = msgspec.field(default_factory=ReceiptsSettings)
    serve: ServeSettings = msgspec.field(default_factory=ServeSettings)
    airflow: AirflowSettings = msgspec.field(default_factory=AirflowSettings)
    # The ingest DAG's fallback cron (`RUNTIME_FACTS__SCHEDULE`) and the home's URI for asset
    # names are the only values needed when a DAG file is parsed; `runtime_facts.airflow`
    # reads them from the environment there, so parsing never builds this object.

    @classmethod
    def load(cls, home: str | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with an explicit home taking precedence.

        Raises:
            UsageError: a variable's value does not convert to its setting's type
                (`invalid_setting`, exit 2).
        """
        data = from_environment(os.environ)
        for name in HOME_VARIABLES:
            value = next((v for k, v in os.environ.items() if k.upper() == name), None)
            if value is not None:
                data["home"] = value
                break
        settings = load_section(cls, data)
        if home is not None:
            settings = settings.replace(home=home)
        if overrides:
            settings = settings.replace(**overrides)
        return settings


def from_environment(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """The nested mapping that `PREFIX<SECTION>__<KEY>` variables spell (names case-blind).

    A whole section may also be one JSON object (`RUNTIME_FACTS__INGEST='{"workers": 3}'`);
    a variable naming one key wins over the same key in that object.
    """
    whole: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(prefix):
            continue
        path = upper[len(prefix) :].lower().split("__")
        if len(path) == 1 and value.lstrip().startswith("{"):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise _invalid(prefix + path[0].upper(), f"not a JSON object ({exc})") from None
            whole[path[0]] = parsed
        elif len(path) == 1:
            keys[path[0]] = value
        elif len(path) == 2:
            keys.setdefault(path[0], {})
            if isinstance(keys[path[0]], dict):
                keys[path[0]][path[1]] = value
    for section, values in keys.items():
        if isinstance(values, dict) and isinstance(whole.get(section), dict):
            whole[section] = {**whole[section], **values}
        else:
            whole[section] = values
    return whole


def load_section(kind: type[_S], data: Mapping[str, Any], prefix: str = ENV_PREFIX) -> _S:
    """`kind` from `data`, a conversion failure raised as `invalid_setting` naming the variable."""
    try:
        return kind.validate(data)
    except msgspec.ValidationError as exc:
        match = re.search(r"at `\$\.([\w.]+)`", str(exc))
        where = match.group(1).replace(".", "__").upper() if match else "?"
        raise _invalid(prefix + where, str(exc).split(" - at ")[0]) from None


def _invalid(variable: str, why: str) -> UsageError:
    return UsageError(
        Reason.INVALID_SETTING,
        f"setting {variable}: {why}",
        hint="fix or unset the variable (docs/runbook.md, Settings, lists every one and its type)",
    )
