#!/usr/bin/env bash
# Build the local base image o16n-base:bookworm with debootstrap, for hosts that cannot
# pull python:3.11-slim (no registry). Debian bookworm's python3 is CPython 3.11.
# Needs root; installs debootstrap with apt when missing. Takes about a minute, once.
set -euo pipefail
tag=${1:-o16n-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'build-base-image: %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already exists"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "building $tag needs root (debootstrap); or set BASE_IMAGE to an image you can pull"
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
rootfs=$(mktemp -d /tmp/o16n-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap bookworm (minbase + python3) into $rootfs from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" | while read -r line; do printf '  %s\n' "$line" >&2; done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
log "importing as $tag"
tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
log "done: $(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
