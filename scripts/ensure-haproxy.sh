#!/usr/bin/env bash
# Make sure Debian's HAProxy is installed, for the web-node tests and bench.webnodes: they
# run `haproxy -f <generated config> -db` as a child process of their own, in front of two
# controllers (docs/haproxy.cfg).
#
# 1. If haproxy is on PATH (or in /usr/sbin), do nothing.
# 2. Otherwise, as root on a Debian-like host, install haproxy with apt-get. Its maintainer
#    scripts would start the system's haproxy service: a policy-rc.d denies every service
#    start during the install. The tests run their own; nothing here leaves one running.
# 3. Otherwise fail, saying what to install: the load-balancer tests cannot run without it.
set -euo pipefail

log() { printf 'ensure-haproxy: %s\n' "$*" >&2; }

if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "haproxy is missing, and this script installs it only as root on Debian."
    log "Install it yourself, e.g. on Debian/Ubuntu:"
    log "    sudo apt-get install -y haproxy"
    exit 1
fi

log "installing haproxy with apt-get (one time)"
# shellcheck source=scripts/apt-without-services.sh
. "$(dirname "$0")/apt-without-services.sh"
apt_install_without_services ensure-haproxy.sh haproxy

if [ ! -x /usr/sbin/haproxy ]; then
    log "apt-get did not install /usr/sbin/haproxy: the load-balancer tests cannot run"
    exit 1
fi
exit 0
