#!/usr/bin/env bash
# Make sure Debian's headless-capable `chromium` is installed (tests/runtime_facts/test_report.py
# renders the HTML report in it). A no-op when it is already on PATH; otherwise installs the
# distribution package with apt-get (root, or sudo when available). Nothing is downloaded
# outside the Debian package archive.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "ensure-chromium: chromium is missing and this user cannot run apt-get" >&2
    echo "  install it as root: apt-get install -y chromium fonts-dejavu-core" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null 2>&1 || { echo "ensure-chromium: install failed" >&2; exit 1; }
echo "ensure-chromium: installed $(chromium --version 2>/dev/null || echo chromium)"
