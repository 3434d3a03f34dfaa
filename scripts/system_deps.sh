#!/usr/bin/env bash
# Debian packages the team tests need: PostgreSQL (the MLflow backend store) and
# openssh-server (the ssh:// DVC remote). As root on Debian/Ubuntu, installs what is missing
# (one apt-get update); anywhere else, only says what is missing (those tests then skip,
# or fail under CI=true).
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "system_deps: missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
fi
