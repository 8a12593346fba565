#!/usr/bin/env bash
# Make sure the pieces the compute-node tests (tests/nodes/) start are installed: sshd
# (openssh-server; ssh and ssh-keygen come with openssh-client) and `ip` (iproute2), for
# a network namespace per test node with its own dockerd and sshd. nsenter (util-linux)
# is part of every Debian.
#
# 1. If all of them are there, do nothing.
# 2. Otherwise, as root on a Debian-like host, install them with apt-get. openssh-server's
#    maintainer scripts would start a system sshd on port 22: a policy-rc.d denies every
#    service start during the install, and a system sshd that starts anyway (systemd) is
#    stopped and disabled. The tests run their own sshd, one per node, inside the node's
#    namespace; nothing here ever leaves one running.
# 3. Otherwise only warn: the compute-node tests skip, naming what is missing.
set -euo pipefail

log() { printf 'ensure-nodes: %s\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have_all() { have sshd && have ssh && have ssh-keygen && have ip && have nsenter; }

if have_all; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "sshd, ssh or ip is missing, and this script installs them only as root on Debian."
    log "Install them yourself, e.g. on Debian/Ubuntu:"
    log "    sudo apt-get install -y openssh-server openssh-client iproute2"
    log "without them, the compute-node tests (tests/nodes) skip"
    exit 0
fi

had_sshd=0
have sshd && had_sshd=1

# Deny service starts while apt runs, unless the host already has its own policy.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# ensure-nodes.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

packages=(openssh-server openssh-client iproute2 util-linux)
log "installing ${packages[*]} with apt-get (one time)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if [ "$had_sshd" = 0 ]; then
    # The package's own sshd is not wanted: stop it if it started anyway (systemd ignores
    # policy-rc.d), and keep it from starting at boot.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d ssh disable >/dev/null 2>&1 || true
        if [ -r /run/sshd.pid ] && [ -x /etc/init.d/ssh ]; then
            /etc/init.d/ssh stop >/dev/null 2>&1 || true  # (policy-rc.d would deny invoke-rc.d)
        fi
    fi
fi
if ! have_all; then
    log "apt-get did not install sshd, ssh and ip: the compute-node tests skip"
fi
exit 0
