#!/usr/bin/env python3
"""Write controller/runtime/docker/seccomp.json: Docker's default seccomp profile minus the
syscalls that let one process inspect or steer another, or reach kernel facilities a
sandboxed Python session never needs.

Docker's default profile is compiled into dockerd; its source is moby's
``profiles/seccomp/default.json``. On Debian it ships in the source package
golang-github-docker-docker-dev (the same version as docker.io)::

    apt-get download golang-github-docker-docker-dev && dpkg -x golang-github-docker-*.deb x
    python3 scripts/derive_seccomp.py \
        x/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json

The derived profile keeps Docker's rules, conditions (capabilities, architectures,
kernel versions) and default action (``EPERM``); a denied name is only taken out of every
rule that allows it, so it falls to the default action. Rules left without names go.
Regenerate it when the engine's default profile changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_SOURCE = Path(
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"
)
TARGET = Path(__file__).resolve().parent.parent / "controller" / "runtime" / "docker" / "seccomp.json"

#: Refused to session and service code (errno EPERM), whatever capabilities say.
DENIED = frozenset(
    {
        # reading or writing another process's memory and registers
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "process_mrelease",
        "pidfd_getfd",
        "kcmp",
        # kernel facilities with a history of privilege escalations
        "perf_event_open",
        "userfaultfd",
        "bpf",
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "lookup_dcookie",
    }
)


def derive(profile: dict[str, Any]) -> dict[str, Any]:
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise SystemExit("the source profile does not deny by default: is it Docker's?")
    rules = []
    for rule in profile["syscalls"]:
        names = rule["names"]
        if rule.get("action") == "SCMP_ACT_ALLOW":
            names = [name for name in names if name not in DENIED]
        if names:
            rules.append({**rule, "names": names})
    return {**profile, "syscalls": rules}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    derived = derive(json.loads(args.source.read_text()))
    args.output.write_text(json.dumps(derived, indent=1) + "\n")
    rules = derived["syscalls"]
    allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    left = sorted(DENIED & allowed)
    if left:
        print(f"still allowed: {left}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(derived['syscalls'])} rules, denied {sorted(DENIED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
