#!/usr/bin/env bash
# The Debian packages the end-to-end tests need, installed when missing (`make test` runs this
# first; as root on Debian, it installs them with one apt-get update). Elsewhere it only names
# what is missing: those tests then skip with that name, or fail under CI=true.
#   chromium         the browser tests: the plots page, the drawing page, the MLflow UI
#   postgresql       the team stack's MLflow backend store
#   openssh-server   the ssh:// DVC remote of the team tests
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_deps: missing Debian packages: ${missing[*]} (sudo apt-get install -y ${missing[*]}); their tests will skip" >&2
    exit 0
fi
echo "install_test_deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
