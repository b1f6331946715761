#!/usr/bin/env bash
# The main job (README): install, find or start Redis, start the services, show jobs flowing.
# Pass --once to exit when the demo jobs are done.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # an embedded redis-server, when the machine has none
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
