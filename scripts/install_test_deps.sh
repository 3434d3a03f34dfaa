#!/usr/bin/env bash
# Debian packages the end-to-end tests need, installed when missing (CI runs this as root on a
# fresh machine before `make test`). A user without them gets skipped tests naming the package.
#   chromium: the headless browser tests/test_plots_page.py opens dvc_plots/index.html in
set -euo pipefail

packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)

if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_test_deps: missing ${packages[*]}; run as root: apt-get install -y ${packages[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
