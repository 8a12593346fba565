#!/usr/bin/env bash
# Make sure Debian's PostgreSQL 15 server binaries are installed (initdb, pg_ctl, postgres
# in /usr/lib/postgresql/15/bin), for the test pass on PostgreSQL: tests/postgres_cluster.py
# starts a throw-away cluster of its own with them, as the `postgres` user.
#
# 1. If initdb is there, do nothing.
# 2. Otherwise, as root on a Debian-like host, install postgresql-15 with apt-get. Its
#    maintainer scripts would create and start a system cluster ("15/main", port 5432): a
#    policy-rc.d denies every service start during the install, and a cluster the install
#    created is dropped again. The tests run their own; nothing here leaves one running.
# 3. Otherwise fail, saying what to install: the PostgreSQL pass cannot run without it.
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

BIN=/usr/lib/postgresql/15/bin

if [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ] && [ -x "$BIN/postgres" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "$BIN/initdb is missing, and this script installs it only as root on Debian."
    log "Install PostgreSQL 15's server yourself, e.g. on Debian/Ubuntu:"
    log "    sudo apt-get install -y postgresql-15"
    exit 1
fi

had_main=0
[ -e /etc/postgresql/15/main ] && had_main=1

log "installing postgresql-15 with apt-get (one time)"
# shellcheck source=scripts/apt-without-services.sh
. "$(dirname "$0")/apt-without-services.sh"
apt_install_without_services ensure-postgres.sh postgresql-15

if [ "$had_main" = 0 ] && [ -e /etc/postgresql/15/main ] && command -v pg_dropcluster >/dev/null 2>&1; then
    # the package's own cluster is not wanted (systemd may have started it: --stop)
    pg_dropcluster --stop 15 main >/dev/null 2>&1 || true
fi
if [ ! -x "$BIN/initdb" ]; then
    log "apt-get did not install $BIN/initdb: the PostgreSQL test pass cannot run"
    exit 1
fi
exit 0
