"""Build the native kernel from source with the system C compiler (`make setup` runs this).

    python -m transforms.kernel.build              # transforms/kernel/_events.so
    python -m transforms.kernel.build --sanitized OUT   # ASan + UBSan driver (the tests run it)

Portable flags only (no -march=native): the library is built where it runs, but a home may be
shared by machines of different generations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "events.c"
DRIVER = HERE / "fuzz_driver.c"
LIBRARY = HERE / "_events.so"
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wvla"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def compiler() -> str:
    """The C compiler: $CC, else cc."""
    found = shutil.which(os.environ.get("CC", "cc"))
    if found is None:
        raise SystemExit("no C compiler found (set CC, or install gcc: apt-get install gcc)")
    return found


def build_library(out: Path = LIBRARY) -> Path:
    """Compile the shared library the ingest path loads; atomic, so a reader never sees half."""
    tmp = out.with_suffix(".so.tmp")
    subprocess.run(
        [compiler(), "-O2", "-fPIC", "-shared", *WARNINGS, "-o", str(tmp), str(SOURCE)],
        check=True,
    )
    tmp.replace(out)
    return out


def build_sanitized(out: Path) -> Path:
    """Compile the fuzz driver with the kernel under AddressSanitizer and UBSan."""
    subprocess.run(
        [compiler(), "-O1", "-g", "-fno-omit-frame-pointer", *SANITIZERS, *WARNINGS,
         "-o", str(out), str(DRIVER), str(SOURCE)],
        check=True,
    )  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--sanitized"] and len(argv) == 2:
        sys.stdout.write(f"{build_sanitized(Path(argv[1]))}\n")
        return 0
    if argv:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.write(f"{build_library()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
