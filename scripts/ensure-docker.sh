#!/usr/bin/env bash
# Make sure a Docker engine answers. Used by `make run` and `make test`.
#
# 1. If `docker info` answers, use that engine and never touch it.
# 2. Otherwise, as root on a Debian-like host, install docker.io with apt and
#    start dockerd in the background, waiting until it answers. The engine runs in
#    a session of its own, detached from this script and from the `make` that ran
#    it: Ctrl-C, or a supervisor or CI stopping that command's process group, must
#    not stop the engine and with it every session and service container.
# 3. Otherwise stop with a message saying exactly what to install.
#
# Environment (all optional): DOCKER_HOST, a unix:// socket, is where the engine
# is looked for and where a started one listens; O16N_DOCKERD_ARGS, more dockerd
# flags (e.g. --data-root, --exec-root, --pidfile for an engine beside another);
# O16N_DOCKERD_LOG, its log (default /var/log/dockerd.log).
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<'MSG'
ensure-docker: no Docker engine answers `docker info`, and this script can only
install one as root on a Debian-like host. Install and start Docker Engine
yourself (https://docs.docker.com/engine/install/), e.g. on Debian/Ubuntu:
    sudo apt-get install -y docker.io && sudo systemctl start docker
and add your user to the `docker` group, then run this command again.
MSG
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io with apt-get (one time)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

log_file=${O16N_DOCKERD_LOG:-/var/log/dockerd.log}
dockerd_args=()
case "${DOCKER_HOST:-}" in
    "") ;;
    unix://*) dockerd_args+=(--host "$DOCKER_HOST") ;;
    *)
        log "DOCKER_HOST=$DOCKER_HOST does not answer, and only a unix:// engine can be started here"
        exit 1
        ;;
esac
read -r -a extra_args <<<"${O16N_DOCKERD_ARGS:-}"
dockerd_args+=("${extra_args[@]}")

log "starting dockerd in its own session (log: $log_file)"
# setsid --fork: the engine is not our child, not in our process group or session, and
# has no terminal; it reads nothing and writes only its log. It outlives this script.
setsid --fork dockerd "${dockerd_args[@]}" </dev/null >>"$log_file" 2>&1

for _ in $(seq 1 120); do
    if engine_answers; then
        log "engine ready: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
        exit 0
    fi
    sleep 0.5
done
log "dockerd did not answer within 60 s; last lines of $log_file:"
tail -n 20 "$log_file" >&2 || true
exit 1
