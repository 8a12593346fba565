"""Is the engine's runc fixed against CVE-2024-21626 (a container breakout through a
leaked descriptor of the host, fixed upstream in runc 1.1.12)?

The version comes from the engine (``docker version``'s runc component, else ``docker
info``'s RuncCommit). Distributions backport the fix without changing the upstream version
(Debian 12 ships runc 1.1.5+ds1-1+deb12u1, which is fixed), so an older upstream version is
looked up in the distribution's changelog (``/usr/share/doc/runc/changelog.Debian.gz``, the
same text ``apt changelog runc`` shows): the engine's package version must be an entry of
it, and that entry or an older one must name the CVE. Whatever cannot be confirmed fixed is
a loud warning in the log and ``warn`` in /status; the controller still starts.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import O16nError
from controller.runtime.docker.gateway import DockerGateway

log = logging.getLogger(__name__)

CVE = "CVE-2024-21626"
FIXED_IN = (1, 1, 12)
DEBIAN_CHANGELOG = Path("/usr/share/doc/runc/changelog.Debian.gz")

_UPSTREAM = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_PACKAGE = re.compile(r"^\d[0-9A-Za-z.+~]*-[0-9A-Za-z.+~]+$")  # Debian: upstream-revision
_ENTRY = re.compile(r"^[a-z0-9][a-z0-9.+-]* \(([^)\s]+)\) ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RuncVerdict:
    fixed: bool
    version: str | None
    package: str | None
    reason: str

    def node(self) -> dict[str, Any]:
        """The ``runc`` node of /status."""
        details = {"version": self.version, "package": self.package, "cve": CVE}
        return {
            "statusCode": "pass" if self.fixed else "warn",
            "components": {},
            "details": {**details, "reason": self.reason},
        }


def upstream_version(text: str | None) -> tuple[int, int, int] | None:
    """``1.1.5+ds1`` → (1, 1, 5); ``v1.1.12-0-g51d5e94`` → (1, 1, 12)."""
    match = _UPSTREAM.match(text or "")
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def changelog_fixes(changelog: str, package: str, cve: str = CVE) -> bool | None:
    """Whether ``package``'s entry of a Debian-format changelog, or an older entry, names
    ``cve``; ``None`` when the changelog has no entry for ``package`` (another build)."""
    for entry in _ENTRY.finditer(changelog):
        if entry.group(1) == package:
            return cve in changelog[entry.start() :]
    return None


def judge(version: str | None, package: str | None, changelog: str | None) -> RuncVerdict:
    """The verdict for an engine's runc ``version`` and its package version, given the
    distribution's changelog text (``None``: none installed)."""
    upstream = upstream_version(version)
    if upstream is None:
        return RuncVerdict(False, version, package, "the engine does not say its runc version")
    if upstream >= FIXED_IN:
        return RuncVerdict(True, version, package, "runc 1.1.12 or later")
    if package is None or not _PACKAGE.match(package):
        return RuncVerdict(False, version, package, f"runc older than 1.1.12, unpatched for {CVE}")
    if changelog is None:
        return RuncVerdict(
            False, version, package, f"runc older than 1.1.12 and no changelog shows a {CVE} fix"
        )
    fixed = changelog_fixes(changelog, package)
    if fixed is None:
        reason = f"runc older than 1.1.12; package {package} is not in this host's changelog"
        return RuncVerdict(False, version, package, reason)
    if fixed:
        return RuncVerdict(True, version, package, f"the {CVE} fix is backported in {package}")
    return RuncVerdict(False, version, package, f"package {package} predates the {CVE} fix")


def _read_changelog(path: Path) -> str | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read(4 * 1024 * 1024)
    except OSError:
        return None


async def check(gateway: DockerGateway, changelog: Path = DEBIAN_CHANGELOG) -> RuncVerdict:
    """Judge the engine's runc; log loudly unless it is fixed."""
    try:
        version, package = await gateway.runc_version()
    except O16nError as exc:
        verdict = RuncVerdict(False, None, None, f"the engine did not say: {exc.message}")
    else:
        text = await asyncio.to_thread(_read_changelog, changelog)
        verdict = judge(version, package, text)
    if verdict.fixed:
        log.info("runc is fixed for %s", CVE, extra=verdict.node()["details"])
    else:
        log.warning(
            "SECURITY: the Docker engine's runc may be vulnerable to %s (container breakout);"
            " upgrade runc to 1.1.12 or later, or to a distribution build with the fix",
            CVE,
            extra=verdict.node()["details"],
        )
    return verdict
