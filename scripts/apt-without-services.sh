# Sourced by the ensure-*.sh scripts that install a server package only for the tests to
# start their own: `apt_install_without_services <who> <package>...` installs the packages
# with apt-get while a policy-rc.d denies every service start (their maintainer scripts
# would start the system's own server), unless the host already has a policy of its own.
apt_install_without_services() {
    local who=$1
    shift
    local policy=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# %s: no service starts during its apt-get install\nexit 101\n' "$who" >"$policy"
        chmod 755 "$policy"
        ours=1
        _apt_policy=$policy
        trap 'rm -f "$_apt_policy"' EXIT  # also when interrupted
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        status=$?
    if [ "$ours" = 1 ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    return "$status"
}
