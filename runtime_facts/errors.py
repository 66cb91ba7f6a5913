"""Typed errors with stable reason codes and the CLI exit codes of SPEC §9."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from transforms.errors import Reason as TransformReason
from transforms.errors import ReasonedError, RejectedInput, TransformError


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
    MISSING_SYMBOL_ID = TransformReason.MISSING_SYMBOL_ID.value
    INVALID_SYMBOL_ID = TransformReason.INVALID_SYMBOL_ID.value
    INVALID_HIT_COUNT = TransformReason.INVALID_HIT_COUNT.value
    INVALID_JSON = TransformReason.INVALID_JSON.value
    INVALID_UTF8 = TransformReason.INVALID_UTF8.value
    INVALID_UNICODE_ESCAPE = TransformReason.INVALID_UNICODE_ESCAPE.value
    LINE_TOO_LONG = TransformReason.LINE_TOO_LONG.value
    NOT_AN_OBJECT = TransformReason.NOT_AN_OBJECT.value
    DUPLICATE_KEY = TransformReason.DUPLICATE_KEY.value
    NESTING_TOO_DEEP = TransformReason.NESTING_TOO_DEEP.value
    NUMBER_TOO_LONG = TransformReason.NUMBER_TOO_LONG.value
    INVALID_NUMBER = TransformReason.INVALID_NUMBER.value
    CONTROL_CHARACTER = TransformReason.CONTROL_CHARACTER.value
    INVALID_CODE_ID = TransformReason.INVALID_CODE_ID.value
    INVALID_FIELD_TYPE = TransformReason.INVALID_FIELD_TYPE.value
    INVALID_LOADER_BASE = TransformReason.INVALID_LOADER_BASE.value
    INVALID_PROCESS = TransformReason.INVALID_PROCESS.value
    INVALID_METADATA = TransformReason.INVALID_METADATA.value
    INVALID_TIMESTAMP = TransformReason.INVALID_TIMESTAMP.value
    NON_MONOTONIC_TIMESTAMP = TransformReason.NON_MONOTONIC_TIMESTAMP.value
    # batch level
    BATCH_TOO_LARGE = "batch_too_large"
    EMPTY_BATCH = TransformReason.EMPTY_BATCH.value
    INVALID_GZIP = TransformReason.INVALID_GZIP.value
    TRUNCATED_GZIP = TransformReason.TRUNCATED_GZIP.value
    TRAILING_GARBAGE = TransformReason.TRAILING_GARBAGE.value
    DECOMPRESSED_TOO_LARGE = TransformReason.DECOMPRESSED_TOO_LARGE.value
    COMPRESSION_RATIO_EXCEEDED = TransformReason.COMPRESSION_RATIO_EXCEEDED.value
    INVALID_LINES = "invalid_lines"
    NO_VALID_LINES = "no_valid_lines"
    HIT_COUNT_OVERFLOW = TransformReason.HIT_COUNT_OVERFLOW.value
    DUPLICATE_JSON_KEY = TransformReason.DUPLICATE_JSON_KEY.value
    CONTEXT_MISSING = "context_missing"
    CONTEXT_MISMATCH = "context_mismatch"
    CAS_DIGEST_MISMATCH = "cas_digest_mismatch"
    CAS_MISS = "cas_miss"
    UNKNOWN_SUBJECT = "unknown_subject"
    NO_TABLES = "no_tables"
    CONTEXT_CONFLICT = "context_conflict"
    INVALID_CONTEXT = "invalid_context"
    INVALID_SETTING = "invalid_setting"
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
    RECEIPT_CHECKPOINT_MISSING = "receipt_checkpoint_missing"
    RECEIPT_CHECKPOINT_INVALID = "receipt_checkpoint_invalid"
    RECEIPT_CHECKPOINT_MISMATCH = "receipt_checkpoint_mismatch"
    RECEIPT_PROVENANCE_INVALID = "receipt_provenance_invalid"
    RECEIPT_APPEND_CONFLICT = "receipt_append_conflict"
    LAKE_VERSION_MISSING = "lake_version_missing"
    LAKE_BATCH_MISSING = "lake_batch_missing"
    LAKE_FACTS_MISMATCH = "lake_facts_mismatch"
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
    # the command line
    HOME_NOT_FOUND = "home_not_found"
    FILE_NOT_FOUND = "file_not_found"
    UNKNOWN_CALLGRAPH = "unknown_callgraph"
    UNKNOWN_BATCH = "unknown_batch"
    NO_TOKEN_FILE = "no_token_file"
    PORT_IN_USE = "port_in_use"
    # object-store credentials (s3:// homes)
    AWS_CONNECTION_NOT_FOUND = "aws_connection_not_found"
    AWS_CONNECTION_UNAVAILABLE = "aws_connection_unavailable"


RuntimeFactsError = ReasonedError
"""Base error: a message for people, a reason code for machines, an exit code for shells."""

RejectedError = RejectedInput
"""Input data was rejected or a verification failed (exit 3)."""

BatchRejected = TransformError
"""A whole batch is rejected; carries per-line findings when there are any."""


class UsageError(RuntimeFactsError):
    """The caller asked for something malformed (bad tenant, missing subject, ...)."""

    exit_code = ExitCode.USAGE


class NotFoundError(RuntimeFactsError):
    """A CAS object, subject or table does not exist."""

    exit_code = ExitCode.NOT_FOUND


class LockLostError(RuntimeFactsError):
    """A commit domain's lease lapsed or was taken over: this holder must not write."""
