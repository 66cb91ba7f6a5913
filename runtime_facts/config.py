"""One typed settings object: env `RUNTIME_FACTS__SECTION__KEY`, home `RUNTIME_FACTS_HOME`."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

KIB = 1024
MIB = 1024 * KIB


class IngestSettings(BaseModel):
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


class ScoreSettings(BaseModel):
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


class RetentionSettings(BaseModel):
    """How long facts and CAS objects are kept (SPEC §7)."""

    retention_days: int = 30
    """Facts are kept hot while `last_observed_at` is newer than this."""
    cas_retention_days: int = 180
    """CAS objects older than this are deleted unless still referenced."""


class OfflineSettings(BaseModel):
    """Offline-kit verification."""

    public_key: str | None = None
    """Ed25519 public key (base64 raw or PEM path) that kit signatures are checked against."""


class S3Settings(BaseModel):
    """Object-store access for an `s3://` home."""

    aws_conn_id: str | None = None
    """Airflow Connection (type `aws`) that supplies the endpoint and credentials when set:
    login = access key id, password = secret key, extra `endpoint_url`, `region_name`,
    `aws_session_token`. Unset: the standard `AWS_*` variables (what the CLI uses)."""


class ReceiptsSettings(BaseModel):
    """The receipts log's signed checkpoints and provenance (docs/airgap.md)."""

    signing_key: str | None = None
    """Site signing key: path of an Ed25519 private key file (`runtime-facts offline keygen`).
    When set, the log carries DSSE-signed checkpoints and every accepted batch gets a signed
    in-toto provenance statement under `receipts/provenance/`."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Receipts of one tenant's chain between two checkpoints (besides one per ingest run)."""


class ServeSettings(BaseModel):
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


class AirflowSettings(BaseModel):
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


class Settings(BaseSettings):
    """All runtime-facts settings; built inside jobs and tasks, never at DAG parse time."""

    model_config = SettingsConfigDict(
        env_prefix="RUNTIME_FACTS__", env_nested_delimiter="__", extra="ignore"
    )

    home: str = Field(
        default="./var",
        validation_alias=AliasChoices("RUNTIME_FACTS_HOME", "RUNTIME_FACTS__HOME", "home"),
    )
    """Where all state lives: a local directory or `s3://bucket/prefix`."""
    ingest: IngestSettings = IngestSettings()
    score: ScoreSettings = ScoreSettings()
    retention: RetentionSettings = RetentionSettings()
    offline: OfflineSettings = OfflineSettings()
    s3: S3Settings = S3Settings()
    receipts: ReceiptsSettings = ReceiptsSettings()
    serve: ServeSettings = ServeSettings()
    airflow: AirflowSettings = AirflowSettings()
    # The ingest DAG's fallback cron (`RUNTIME_FACTS__SCHEDULE`) and the home's URI for asset
    # names are the only values needed when a DAG file is parsed; `runtime_facts.airflow`
    # reads them from the environment there, so parsing never builds this object.

    @classmethod
    def load(cls, home: str | None = None, **overrides: object) -> Settings:
        """Settings from the environment, with an explicit home taking precedence."""
        settings = cls()
        if home is not None:
            settings = settings.model_copy(update={"home": home})
        if overrides:
            settings = settings.model_copy(update=overrides)
        return settings
