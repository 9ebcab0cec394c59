#!/usr/bin/env bash
# Refresh the hash-pinned locks in requirements/ from pyproject.toml (and requirements/build.in):
#
#   scripts/lock.sh            keep every pin that still fits, add or drop what pyproject changed
#   scripts/lock.sh --upgrade  every pin to the newest release that fits the ranges
#
#   runtime.txt  the dependencies (what the image, the demo and users get), for CPython 3.11 on
#                Linux; the image installs it with --require-hashes
#   build.txt    runtime.txt plus the image's build stage tools (mypy for mypyc, setuptools)
#   test.txt     runtime.txt, build.txt's mypy and setuptools, and the test extra
# Each later file is compiled with the earlier ones as constraints, so a package pinned in two
# files has one version (tests/packaging/test_lock.py checks that and pyproject's ranges). Every
# file of a pinned release is hashed, so the locks also install on aarch64 Linux.
# uv (pinned below) is installed into a throwaway virtualenv unless UV names one to use.
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version=0.13.10
upgrade=()
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=(--upgrade) ;;
  *) echo "usage: scripts/lock.sh [--upgrade]" >&2; exit 2 ;;
esac
uv="${UV:-}"
if [ -z "$uv" ]; then
  tools=$(mktemp -d -t celery-exporter-lock.XXXXXX)
  trap 'rm -rf "$tools"' EXIT
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "uv==$uv_version"
  uv="$tools/bin/uv"
fi
# The machine's CA store, not uv's bundled roots: pip reaches PyPI the same way.
compile=("$uv" pip compile --quiet --native-tls --generate-hashes --python-version 3.11
         --python-platform x86_64-unknown-linux-gnu --custom-compile-command scripts/lock.sh
         "${upgrade[@]}")
"${compile[@]}" pyproject.toml -o requirements/runtime.txt
"${compile[@]}" pyproject.toml requirements/build.in -c requirements/runtime.txt \
  -o requirements/build.txt
"${compile[@]}" pyproject.toml --extra test -c requirements/build.txt -o requirements/test.txt
echo "locked: requirements/runtime.txt build.txt test.txt (uv $("$uv" --version | cut -d' ' -f2))"
