#!/usr/bin/env bash
# Debian packages the test suite needs on a fresh CI machine (.ci/run calls this as root):
# chromium for the browser tests (tests/test_browser.py). Installs only what is missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "ci_system_packages: need root to install: ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
