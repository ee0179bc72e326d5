#!/usr/bin/env bash
# Set up edgesc for development: .venv with a pinned CPU torch, the torch-free runtime and edgesc (editable).
#
#   bash scripts/setup.sh            # idempotent; a second run with nothing changed returns at once
#
# Environment:
#   PYTHON=python3.11          interpreter used to create .venv (default: python3, must be >= 3.10)
#   EDGESC_TORCH_VERSION=2.13.0  the torch version installed first, pinned on purpose: an unpinned torch pulls
#                                a multi-GB CUDA build from PyPI (2.13.0 is the CPU wheel on this machine)
#   EDGESC_SETUP_FORCE=1       reinstall even if the stamp says nothing changed
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${EDGESC_TORCH_VERSION:-2.13.0}"
TORCH_REQ="torch==$TORCH_VERSION"
LOG="$VENV/setup.log"
START=$SECONDS

die() { echo "setup.sh: error: $*" >&2; exit 1; }

# run STEP-NAME CMD...: quiet, output to the log; on failure show the log's tail and the step that failed.
run() {
  local what="$1"; shift
  echo "  - $what"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup.sh: error: step failed: $what" >&2
    echo "---- last lines of $LOG ----" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python >= 3.10 or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$PYTHON" --version 2>&1) is too old: edgesc needs Python >= 3.10 (set PYTHON=...)"

# The stamp records what the last successful setup installed; unchanged inputs + importable packages = done.
inputs_hash() {
  {
    echo "$TORCH_REQ"
    cat "$ROOT/pyproject.toml"
    if [ -f "$ROOT/runtime/pyproject.toml" ]; then cat "$ROOT/runtime/pyproject.toml"; fi
    cat "$ROOT/scripts/setup.sh"
  } | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
STAMP="$VENV/.edgesc-setup"
WANT="$(inputs_hash)"
if [ -z "${EDGESC_SETUP_FORCE:-}" ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] \
   && [ "$(cat "$STAMP")" = "$WANT" ] \
   && "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("torch", "edgesc", "edgesc_runtime")))' >/dev/null 2>&1; then
  echo "setup.sh: .venv is up to date (torch $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("torch"))'))"
  exit 0
fi

echo "setup.sh: setting up $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
: >"$LOG"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --quiet --disable-pip-version-check)

run "upgrade pip" "${PIP[@]}" install --upgrade pip

# torch first and pinned, so that nothing below can pull a CUDA build as a dependency.
if "$VPY" -c 'import sys, torch; sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)' \
     "$TORCH_VERSION" >/dev/null 2>&1
then
  echo "  - $TORCH_REQ already installed"
else
  run "install $TORCH_REQ (CPU build where a local wheel exists)" "${PIP[@]}" install "$TORCH_REQ"
fi

if [ -f "$ROOT/runtime/pyproject.toml" ]; then
  run "install edgesc-runtime (editable, ./runtime)" "${PIP[@]}" install -e "$ROOT/runtime"
else
  die "runtime/pyproject.toml is missing: the checkout is incomplete (edgesc-runtime cannot be installed)"
fi
run "install edgesc[dev,data] (editable)" "${PIP[@]}" install -e "$ROOT[dev,data]"

run "check imports" "$VPY" -c 'import torch, edgesc, edgesc_runtime'
echo "$WANT" >"$STAMP"
echo "setup.sh: done in $((SECONDS - START)) s ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
