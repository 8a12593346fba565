"""The engine's runc is checked for the CVE-2024-21626 fix; a distribution's backport counts."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.runtime.docker import runc
from controller.runtime.docker.gateway import DockerGateway

pytestmark = pytest.mark.docker

# The head of Debian 12's /usr/share/doc/runc/changelog.Debian.gz, as shipped.
DEBIAN_BOOKWORM = """\
runc (1.1.5+ds1-1+deb12u1) bookworm-security; urgency=high

  * Team upload.
  * CVE-2024-21626: several container breakouts due to internally leaked fds

 -- Shengjing Zhu <zhsj@debian.org>  Fri, 02 Feb 2024 21:53:05 +0800

runc (1.1.5+ds1-1) unstable; urgency=medium

  * Team upload.
  * New upstream version 1.1.5+ds1
    + CVE-2023-25809: rootless: `/sys/fs/cgroup` is writable when cgroupns
      isn't unshared
    + CVE-2023-27561: Incorrect Authorization vulnerability
      (re-introduced CVE-2019-19921) (Closes: #1033520)
    + CVE-2023-28642: AppArmor/SELinux bypass with symlinked /proc
  * Drop patches applied in new version
    - 0009-tests-replace-local-hello-world-bundle-with-busybox-.patch
    - 0010-tests-convert-arm32-arch-string-when-download-bundle.patch
  * Add patch to skip TestOpenat2 when cgroups is not available

 -- Shengjing Zhu <zhsj@debian.org>  Wed, 29 Mar 2023 17:24:36 +0800

runc (1.1.4+ds1-1) unstable; urgency=medium

  * Team upload.
  * New upstream version 1.1.4+ds1

 -- Shengjing Zhu <zhsj@debian.org>  Sat, 27 Aug 2022 18:27:50 +0800
"""

# Shaped like Ubuntu's security uploads (same Debian changelog format).
UBUNTU_JAMMY = """\
runc (1.1.7-0ubuntu1~22.04.2) jammy-security; urgency=medium

  * SECURITY UPDATE: container breakout through leaked file descriptors
    - debian/patches/CVE-2024-21626-1.patch: close fds before exec.
    - CVE-2024-21626

 -- Security Team <security@ubuntu.com>  Wed, 31 Jan 2024 10:00:00 -0500

runc (1.1.7-0ubuntu1~22.04.1) jammy; urgency=medium

  * Backport version 1.1.7-0ubuntu1 from Lunar.

 -- Security Team <security@ubuntu.com>  Mon, 17 Jul 2023 10:00:00 -0400
"""


@pytest.mark.parametrize(
    ("version", "package", "changelog", "fixed"),
    [
        ("1.1.12", "v1.1.12-0-g51d5e94", None, True),  # upstream build (docker-ce)
        ("1.2.3", "v1.2.3-0-g0d91c8c", None, True),
        ("1.1.11", "v1.1.11-0-g4bccb38", None, False),  # a git describe, no package
        ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1", DEBIAN_BOOKWORM, True),  # backported
        ("1.1.5+ds1", "1.1.5+ds1-1", DEBIAN_BOOKWORM, False),  # before the backport
        ("1.1.4+ds1", "1.1.4+ds1-1", DEBIAN_BOOKWORM, False),
        ("1.1.5+ds1", "1.1.5+ds1-1+deb12u9", DEBIAN_BOOKWORM, False),  # not this host's build
        ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1", None, False),  # no changelog to confirm
        ("1.1.7", "1.1.7-0ubuntu1~22.04.2", UBUNTU_JAMMY, True),
        ("1.1.7", "1.1.7-0ubuntu1~22.04.1", UBUNTU_JAMMY, False),
        (None, None, DEBIAN_BOOKWORM, False),
        ("garbage", "x", DEBIAN_BOOKWORM, False),
    ],
)
def test_judge(
    version: str | None, package: str | None, changelog: str | None, fixed: bool
) -> None:
    verdict = runc.judge(version, package, changelog)
    assert verdict.fixed is fixed, verdict.reason
    assert verdict.node()["statusCode"] == ("pass" if fixed else "warn")


def test_version_parsing() -> None:
    assert runc.upstream_version("1.1.5+ds1") == (1, 1, 5)
    assert runc.upstream_version("v1.1.12-0-g51d5e94") == (1, 1, 12)
    assert runc.upstream_version("1.2.0-rc.1") == (1, 2, 0)
    assert runc.upstream_version("") is None
    assert runc.changelog_fixes(DEBIAN_BOOKWORM, "0.9-1") is None


async def test_the_real_engine_is_judged_without_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await DockerGateway.connect()
    try:
        verdict = await runc.check(gateway)
        assert verdict.version is not None, verdict.reason
        assert verdict.node()["statusCode"] in ("pass", "warn")
        if runc.DEBIAN_CHANGELOG.exists() and verdict.package == _installed_package():
            assert verdict.fixed is (runc.CVE in _installed_changelog()), verdict.reason
        # the same engine, judged against a changelog that predates the fix, is a loud warning
        old = tmp_path / "changelog.Debian.gz"
        text = DEBIAN_BOOKWORM[DEBIAN_BOOKWORM.index("runc (1.1.5+ds1-1) ") :]
        old.write_bytes(gzip.compress(text.encode()))
        verdict = await runc.check(gateway, old)
        if runc.upstream_version(verdict.version) < runc.FIXED_IN:  # type: ignore[operator]
            assert not verdict.fixed
            assert any("SECURITY" in r.getMessage() for r in caplog.records)
    finally:
        await gateway.close()


async def test_status_reports_the_runc_verdict(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    body = await (await client.get("/status", headers=admin_headers)).json()
    node = body["components"]["runc"]
    assert node["statusCode"] in ("pass", "warn")
    assert node["details"]["cve"] == "CVE-2024-21626" and node["details"]["reason"]


def _installed_changelog() -> str:
    with gzip.open(runc.DEBIAN_CHANGELOG, "rt", errors="replace") as f:
        return f.read()


def _installed_package() -> str | None:
    first = _installed_changelog().split("\n", 1)[0]
    return first.split("(", 1)[1].split(")", 1)[0] if "(" in first else None
