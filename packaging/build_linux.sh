#!/usr/bin/env bash
# Build the one-folder DUCH Desktop bundle with PyInstaller: packaging/dist/duch-desktop/.
#
#   packaging/build_linux.sh [--venv DIR] [--smoke]
#
# Python environment: the active virtual environment ($VIRTUAL_ENV) when there is one, else
# DIR (default packaging/.build-venv, created and filled from pyproject.toml with the CPU build
# of torch). PyInstaller is installed into it when missing. --smoke runs the bundle's
# `--self-test` afterwards (offscreen). Prints the build time and the bundle size; exits non-zero
# when the build or the smoke test fails.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="" SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build_linux.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
if [ -z "$VENV" ] && [ -n "${VIRTUAL_ENV:-}" ]; then
  VENV="$VIRTUAL_ENV"
elif [ -z "$VENV" ]; then
  VENV="$HERE/.build-venv"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating the build venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CPU build of torch (a bare `torch` from PyPI is the CUDA build, several GB); see packaging/README.md.
  "$VENV/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || "$VENV/bin/python" -m pip install -q torch==2.13.0
  "$VENV/bin/python" -m pip install -q "$ROOT"
fi
PY="$VENV/bin/python"
"$PY" -c "import PyInstaller" 2>/dev/null || "$PY" -m pip install -q pyinstaller

start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$HERE/dist" --workpath "$HERE/build" "$HERE/duch-desktop.spec"
BUNDLE="$HERE/dist/duch-desktop"
ln -sfn duch-desktop "$BUNDLE/duch"  # the CLI: the same executable started as `duch`
took=$(( $(date +%s) - start ))
size=$(du -sh "$BUNDLE" | cut -f1)
echo "== built $BUNDLE in ${took} s: $size on disk ($(find "$BUNDLE" -type f | wc -l) files)"
if [ "$SMOKE" = 1 ]; then
  echo "== smoke test: $BUNDLE/duch-desktop --self-test"
  start=$(date +%s)
  QT_QPA_PLATFORM=offscreen "$BUNDLE/duch-desktop" --self-test
  echo "== self-test passed in $(( $(date +%s) - start )) s"
fi
