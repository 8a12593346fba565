#!/usr/bin/env bash
# Make sure OpenLDAP's pieces are installed: the headers python-ldap compiles against
# (libldap2-dev, libsasl2-dev; `pip install` needs them, with a C compiler and the
# headers of the Python that builds the venv, $PYTHON), and the server the LDAP tests
# start themselves (slapd, with slapadd; ldap-utils for debugging by hand).
#
# 1. If all of them are there, do nothing.
# 2. Otherwise, as root on a Debian-like host, install them with apt-get. slapd's
#    maintainer scripts would start a system slapd (with a default dc=nodomain
#    directory): a policy-rc.d denies every service start during the install, and a
#    system slapd that starts anyway (systemd) is stopped and disabled. The tests run
#    their own slapd on free ports; nothing here ever leaves one running.
# 3. Otherwise say what to install: stop (exit 1) when the headers are missing, since
#    python-ldap cannot be built; without slapd only warn (the LDAP tests skip, naming it).
set -euo pipefail

log() { printf 'ensure-ldap: %s\n' "$*" >&2; }

have_headers() { [ -e /usr/include/ldap.h ] && [ -e /usr/include/lber.h ] && [ -e /usr/include/sasl/sasl.h ]; }
have_server() { command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; }
have_compiler() {
    command -v cc >/dev/null 2>&1 || return 1
    local include
    include=$("${PYTHON:-python3}" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null) || return 0
    [ -e "$include/Python.h" ]
}

if have_headers && have_server && have_compiler; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "OpenLDAP's packages are missing, and this script installs them only as root on"
    log "Debian. Install them yourself, e.g. on Debian/Ubuntu:"
    log "    sudo apt-get install -y libldap2-dev libsasl2-dev slapd ldap-utils gcc python3-dev"
    if ! have_headers || ! have_compiler; then
        log "(python-ldap, a dependency of o16n, compiles against libldap's headers)"
        exit 1
    fi
    log "without slapd, the LDAP tests skip"
    exit 0
fi

had_slapd=0
have_server && had_slapd=1

# Deny service starts while apt runs, unless the host already has its own policy.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# ensure-ldap.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

packages=(libldap2-dev libsasl2-dev slapd ldap-utils)
have_compiler || packages+=(gcc libc6-dev python3-dev)
log "installing ${packages[*]} with apt-get (one time)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if [ "$had_slapd" = 0 ]; then
    # The package's own slapd is not wanted: stop it if it started anyway, and keep it
    # from starting at boot.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now slapd >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d slapd disable >/dev/null 2>&1 || true
        if [ -r /run/slapd/slapd.pid ] && [ -x /etc/init.d/slapd ]; then
            /etc/init.d/slapd stop >/dev/null 2>&1 || true  # (policy-rc.d would deny invoke-rc.d)
        fi
    fi
fi
if ! have_headers; then
    log "apt-get did not install libldap's headers: python-ldap cannot be built"
    exit 1
fi
exit 0
