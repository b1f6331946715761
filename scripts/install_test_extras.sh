#!/usr/bin/env bash
# What the browser tests need beyond Python packages: Debian's Chromium (Playwright drives it;
# no browser download is possible or needed). Installs only when it is missing.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the dashboard tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and we are not root: the browser tests will be skipped" >&2
  fi
fi
