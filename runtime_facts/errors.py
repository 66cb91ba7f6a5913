"""Typed errors with stable reason codes and the CLI exit codes of SPEC §9."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes operators script against."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    REJECTED = 3
    NOT_FOUND = 4


class Reason(StrEnum):
    """Stable reason codes for rejected lines, batches, kits and verifications."""

    # line level
    MISSING_SYMBOL_ID = "missing_symbol_id"
    INVALID_SYMBOL_ID = "invalid_symbol_id"
    INVALID_HIT_COUNT = "invalid_hit_count"
    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_UNICODE_ESCAPE = "invalid_unicode_escape"
    LINE_TOO_LONG = "line_too_long"
    NOT_AN_OBJECT = "not_an_object"
    DUPLICATE_KEY = "duplicate_key"
    NESTING_TOO_DEEP = "nesting_too_deep"
    NUMBER_TOO_LONG = "number_too_long"
    INVALID_NUMBER = "invalid_number"
    NUL_CHARACTER = "nul_character"
    INVALID_FIELD_TYPE = "invalid_field_type"
    INVALID_LOADER_BASE = "invalid_loader_base"
    INVALID_PROCESS = "invalid_process"
    INVALID_METADATA = "invalid_metadata"
    INVALID_TIMESTAMP = "invalid_timestamp"
    NON_MONOTONIC_TIMESTAMP = "non_monotonic_timestamp"
    # batch level
    BATCH_TOO_LARGE = "batch_too_large"
    EMPTY_BATCH = "empty_batch"
    INVALID_GZIP = "invalid_gzip"
    TRUNCATED_GZIP = "truncated_gzip"
    TRAILING_GARBAGE = "trailing_garbage"
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
    COMPRESSION_RATIO_EXCEEDED = "compression_ratio_exceeded"
    INVALID_LINES = "invalid_lines"
    NO_VALID_LINES = "no_valid_lines"
    HIT_COUNT_OVERFLOW = "hit_count_overflow"
    CAS_DIGEST_MISMATCH = "cas_digest_mismatch"
    CAS_MISS = "cas_miss"
    UNKNOWN_SUBJECT = "unknown_subject"
    NO_TABLES = "no_tables"
    CONTEXT_CONFLICT = "context_conflict"
    INVALID_CONTEXT = "invalid_context"
    CONTEXT_MISSING = "context_missing"
    TENANT_MISMATCH = "tenant_mismatch"
    SEALED_MODE_EVIDENCE_INVALID = "sealed_mode_evidence_invalid"
    RECEIPT_CHAIN_BROKEN = "receipt_chain_broken"
    # commit domains (one per tenant)
    COMMIT_LOCK_LOST = "commit_lock_lost"
    # offline kits, receipts verification, replay (air gap)
    KIT_NOT_FOUND = "kit_not_found"
    KIT_NOT_A_DIRECTORY = "kit_not_a_directory"
    KIT_MANIFEST_MISSING = "kit_manifest_missing"
    KIT_MANIFEST_INVALID = "kit_manifest_invalid"
    KIT_MANIFEST_UNSUPPORTED = "kit_manifest_unsupported"
    KIT_FILE_MISSING = "kit_file_missing"
    KIT_FILE_UNLISTED = "kit_file_unlisted"
    KIT_SIZE_MISMATCH = "kit_size_mismatch"
    KIT_DIGEST_MISMATCH = "kit_digest_mismatch"
    KIT_PATH_ESCAPE = "kit_path_escape"
    KIT_SYMLINK = "kit_symlink"
    KIT_HARDLINK = "kit_hardlink"
    KIT_SPECIAL_FILE = "kit_special_file"
    KIT_SIGNATURE_INVALID = "kit_signature_invalid"
    KIT_PUBLIC_KEY_MISSING = "kit_public_key_missing"
    KIT_KEY_INVALID = "kit_key_invalid"
    KIT_TENANT_MISMATCH = "kit_tenant_mismatch"
    KIT_OUTPUT_EXISTS = "kit_output_exists"
    RECEIPTS_LOG_MISSING = "receipts_log_missing"
    RECEIPTS_TABLE_MISMATCH = "receipts_table_mismatch"
    REPLAY_MANIFEST_MISSING = "replay_manifest_missing"
    REPLAY_MANIFEST_INVALID = "replay_manifest_invalid"
    REPLAY_SECTION_UNSUPPORTED = "replay_section_unsupported"
    REPLAY_DIGEST_MISMATCH = "replay_digest_mismatch"
    # staging endpoint (runtime-facts serve)
    UNAUTHENTICATED = "unauthenticated"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    BODY_TIMEOUT = "body_timeout"
    HEADER_TIMEOUT = "header_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    TOO_MANY_HEADERS = "too_many_headers"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SERVER_BUSY = "server_busy"
    CLIENT_DISCONNECTED = "client_disconnected"
    AIRFLOW_UNAVAILABLE = "airflow_unavailable"
    # analysts' queries and reports
    SQL_ERROR = "sql_error"
    INVALID_AS_OF = "invalid_as_of"
    UNKNOWN_TABLE = "unknown_table"
    VERSION_NOT_FOUND = "version_not_found"
    MISSING_OUTPUT = "missing_output"
    OUTPUT_UNWRITABLE = "output_unwritable"
    UNSUPPORTED_HOME = "unsupported_home"


class RuntimeFactsError(Exception):
    """Base error: a message for people, a reason code for machines, an exit code for shells."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, reason: Reason | str, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.reason = str(reason)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.reason}] {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class UsageError(RuntimeFactsError):
    """The caller asked for something malformed (bad tenant, missing subject, ...)."""

    exit_code = ExitCode.USAGE


class RejectedError(RuntimeFactsError):
    """Input data was rejected or a verification failed."""

    exit_code = ExitCode.REJECTED


class NotFoundError(RuntimeFactsError):
    """A CAS object, subject or table does not exist."""

    exit_code = ExitCode.NOT_FOUND


class LockLostError(RuntimeFactsError):
    """A commit domain's lease lapsed or was taken over: this holder must not write."""


class BatchRejected(RejectedError):
    """A whole batch is rejected; carries per-line findings when there are any."""

    def __init__(
        self,
        reason: Reason | str,
        message: str,
        *,
        lines: list[tuple[int, str, str]] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(reason, message, hint=hint)
        self.lines = lines or []
