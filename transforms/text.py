"""Which characters a string of the product may not hold, and the accepted timestamp range.

One definition serves the event validation (both paths) and the subject-context ids, so a
control or invisible character is refused the same way wherever it arrives.

Refused code points: every Unicode control (`Cc`: C0 U+0000-U+001F, DEL U+007F, C1
U+0080-U+009F) and the invisible or direction-changing format characters — soft hyphen
U+00AD, Arabic letter mark U+061C, Mongolian vowel separator U+180E, zero-width space / joiners
and marks U+200B-U+200F, bidi embeddings and overrides U+202A-U+202E, word joiner and invisible
operators U+2060-U+2064, bidi isolates and deprecated format U+2066-U+206F, byte-order mark
U+FEFF, interlinear annotation U+FFF9-U+FFFB, and the tag characters U+E0000-U+E007F. They
either break a terminal, a CSV or a log line, or make two different strings look identical.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xE0000, 0xE007F),
)

# The same class in the two regex dialects: Rust's (polars) and Python's.
FORBIDDEN_CLASS_RUST = (
    "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in FORBIDDEN_RANGES) + "]"
)
_FORBIDDEN_RE = re.compile(
    "[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in FORBIDDEN_RANGES) + "]"
)

# Timestamps must fit every reader: Parquet/Arrow timestamp[us] holds +-292,000 years, Python's
# datetime (what DuckDB, polars and pyarrow hand to Python code) only years 1-9999.
MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MIN_TIMESTAMP_US = -62135596800_000000
MAX_TIMESTAMP_US = 253402300799_999999


def forbidden_character(value: str) -> str | None:
    """The first refused character of `value` as `U+XXXX`, or None when there is none."""
    found = _FORBIDDEN_RE.search(value)
    return None if found is None else f"U+{ord(found.group()):04X}"
