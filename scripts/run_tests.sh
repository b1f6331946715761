#!/usr/bin/env bash
# The test command (README, CI): install everything the tests need, then run them.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k fallback`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # an embedded redis-server, when the machine has none
FIKIRI_DEV=1 bash scripts/bootstrap.sh
[ -x scripts/install_test_extras.sh ] && bash scripts/install_test_extras.sh
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
