#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite; extra arguments go to pytest.
#   bash scripts/test.sh                 # what CI runs
#   bash scripts/test.sh tests/test_channels.py -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: error: pytest collected no tests (exit code 5); a run without tests is a failure" >&2
  exit 1
fi
exit "$rc"
