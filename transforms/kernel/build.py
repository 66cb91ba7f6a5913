"""Build the native kernel from source with the system C compiler (`make setup` runs this).

    python -m transforms.kernel.build              # transforms/kernel/_events.so, _lthash.so
    python -m transforms.kernel.build --sanitized OUT   # ASan + UBSan driver (the tests run it)

Portable flags only (no -march=native): the library is built where it runs, but a home may be
shared by machines of different generations. The vendored BLAKE3 (blake3/) compiles its SSE2,
SSE4.1 and AVX-512 files with those instruction sets and picks one at run time from CPUID (and
the OS's saved-state flags), as its own build does; elsewhere than x86-64 it is the portable C.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "events.c"
DEDUPE_SOURCE = HERE / "dedupe.c"
DRIVER = HERE / "fuzz_driver.c"
LIBRARY = HERE / "_events.so"
LTHASH_SOURCE = HERE / "lthash.c"
LTHASH_LIBRARY = HERE / "_lthash.so"
BLAKE3 = HERE / "blake3"
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wvla"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def compiler() -> str:
    """The C compiler: $CC, else cc."""
    found = shutil.which(os.environ.get("CC", "cc"))
    if found is None:
        raise SystemExit("no C compiler found (set CC, or install gcc: apt-get install gcc)")
    return found


def build_library(out: Path = LIBRARY) -> Path:
    """Compile the shared library the ingest path loads (validation and dedupe); atomic, so a
    reader never sees half."""
    tmp = out.with_suffix(".so.tmp")
    subprocess.run(
        [compiler(), "-O2", "-fPIC", "-shared", *WARNINGS,
         "-o", str(tmp), str(SOURCE), str(DEDUPE_SOURCE)],
        check=True,
    )  # fmt: skip
    tmp.replace(out)
    return out


def blake3_sources() -> list[tuple[Path, list[str]]]:
    """The vendored BLAKE3 files for this machine, each with its own flags."""
    common = [BLAKE3 / "blake3.c", BLAKE3 / "blake3_dispatch.c", BLAKE3 / "blake3_portable.c"]
    files: list[tuple[Path, list[str]]] = [(path, []) for path in common]
    if platform.machine().lower() in {"x86_64", "amd64"}:
        files += [
            (BLAKE3 / "blake3_sse2.c", ["-msse2"]),
            (BLAKE3 / "blake3_sse41.c", ["-msse4.1"]),
            (BLAKE3 / "blake3_avx512.c", ["-mavx512f", "-mavx512vl"]),
        ]
    return files


def blake3_defines() -> list[str]:
    """Which BLAKE3 back ends are left out. AVX2 only serves inputs of several 1 KiB chunks
    (a row is one); AVX-512 is kept for its 16-block output (`blake3_xof_many`): the 2 KiB
    expansion of a row is 32 output blocks, most of the LtHash's cost."""
    defines = ["-DBLAKE3_NO_AVX2", "-DBLAKE3_USE_NEON=0"]
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        defines += ["-DBLAKE3_NO_SSE2", "-DBLAKE3_NO_SSE41", "-DBLAKE3_NO_AVX512"]
    return defines


def _blake3_objects(work: Path, flags: list[str]) -> list[str]:
    objects = []
    for source, extra in blake3_sources():
        obj = work / (source.stem + ".o")
        subprocess.run(
            [compiler(), *flags, "-std=gnu11", *blake3_defines(), *extra,
             "-c", "-o", str(obj), str(source)],
            check=True,
        )  # fmt: skip
        objects.append(str(obj))
    return objects


def build_lthash(out: Path = LTHASH_LIBRARY) -> Path:
    """Compile the LtHash library (lthash.c with BLAKE3); atomic like `build_library`."""
    tmp = out.with_suffix(".so.tmp")
    with tempfile.TemporaryDirectory() as work:
        objects = _blake3_objects(Path(work), ["-O3", "-fPIC"])
        subprocess.run(
            [compiler(), "-O3", "-fPIC", "-shared", *WARNINGS, *blake3_defines(),
             "-o", str(tmp), str(LTHASH_SOURCE), *objects],
            check=True,
        )  # fmt: skip
    tmp.replace(out)
    return out


def build_sanitized(out: Path) -> Path:
    """Compile the fuzz driver with both kernels (BLAKE3 too) under AddressSanitizer and UBSan."""
    flags = ["-O1", "-g", "-fno-omit-frame-pointer", *SANITIZERS]
    with tempfile.TemporaryDirectory() as work:
        objects = _blake3_objects(Path(work), flags)
        subprocess.run(
            [compiler(), *flags, *WARNINGS, *blake3_defines(),
             "-o", str(out), str(DRIVER), str(SOURCE), str(DEDUPE_SOURCE), str(LTHASH_SOURCE),
             *objects],
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
    sys.stdout.write(f"{build_library()}\n{build_lthash()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
