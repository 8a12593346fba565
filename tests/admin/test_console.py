"""The web console at ``/admin/``: its files are public, a fixed allow-list, and served
with a strict Content-Security-Policy; in a real headless Chromium an Owner signs in,
sees a session a user created through the API, closes it, and finds the close in the
audit view, without a CSP violation and without the token in a cookie. A non-Owner is
told the Owner role is required. Screenshots of each step go to the test's tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient

from controller.admin.console import CSP
from tests.conftest import ADMIN_PASSWORD
from tests.live_server import LiveServer, run_server

pytestmark = pytest.mark.docker

# A session name is the user's to choose: the console must show it as text.
HOSTILE = '<img src=x onerror="document.title=1">"work"'

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records CSP violations the page meets (Chromium also logs them as console errors).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


async def test_console_files_are_public_fixed_and_under_a_strict_csp(
    client: TestClient[Any, Any],
) -> None:
    for path, kind in (
        ("/admin/", "text/html"),
        ("/admin/console/app.js", "text/javascript"),
        ("/admin/console/style.css", "text/css"),
    ):
        resp = await client.get(path)  # no token: the page holds no data
        assert resp.status == 200, path
        assert resp.content_type == kind
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "Set-Cookie" not in resp.headers
    page = await (await client.get("/admin/")).text()
    assert "<script>" not in page and "style=" not in page and "<style" not in page

    resp = await client.get("/admin", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == "/admin/"

    # Only the allow-list: no directory behind it, no way up and out of it.
    for path in (
        "/admin/console/",
        "/admin/console/index.html",
        "/admin/console/__init__.py",
        "/admin/console/static/app.js",
        "/admin/console/%2e%2e/%2e%2e/settings.py",
        "/admin/console/..%2f..%2fsettings.py",
        "/admin/index.html",
    ):
        resp = await client.get(path)
        assert resp.status in (401, 404), path  # an /admin API route still wants a token
        assert "text/html" not in resp.headers.get("Content-Type", ""), path
    # The data stays behind the token.
    assert (await client.get("/admin/sessions")).status == 401


def _chromium() -> str:
    path = os.environ.get("O16N_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.skip(
            "Debian's chromium is not installed (run `make chromium` as root, or set "
            "O16N_CHROMIUM): the console's browser test needs a real browser"
        )
    return path


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    yield from run_server(warm_pool_size="0", service_pool_initial="0")


class Browser:
    """A page in a fresh Chromium profile, recording console errors and CSP violations."""

    def __init__(self, page: Any, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.errors: list[str] = []
        self.count = 0
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", lambda dialog: dialog.accept())  # the console's confirm()s
        page.add_init_script(RECORD_VIOLATIONS)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=True)

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations")
        return found


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield Browser(page, tmp_path)
        finally:
            context.close()


def _user(live: LiveServer, name: str, role: str = "Contributor") -> dict[str, str]:
    password = "password-" + name
    resp = requests.post(
        f"{live.url}/admin/users",
        json={"name": name, "role": role, "password": password},
        headers=live.headers,
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return {"username": name, "password": password}


def _sign_in(browser: Browser, live: LiveServer, username: str, password: str) -> None:
    page = browser.page
    page.goto(f"{live.url}/admin/")
    page.wait_for_selector("#login-form")
    browser.shot("sign-in")
    page.fill("#login-user", username)
    page.fill("#login-password", password)
    page.click("#login-submit")


def test_an_owner_closes_a_session_in_the_console(live: LiveServer, browser: Browser) -> None:
    owner = _user(live, "nina")
    token = requests.post(f"{live.url}/login", json=owner, timeout=30).json()["access_token"]
    nina = {"Authorization": f"Bearer {token}"}
    resp = requests.post(
        f"{live.url}/sessions",
        json={"runtimeType": "Python", "name": HOSTILE},
        headers=nina,
        timeout=120,
    )
    assert resp.status_code == 201, resp.text
    session_id = resp.json()["sessionId"]

    page = browser.page
    _sign_in(browser, live, "admin", ADMIN_PASSWORD)
    row = page.wait_for_selector(f'tr[data-session="{session_id}"]', timeout=30_000)
    assert row is not None
    assert "nina" in row.inner_text() and "idle" in row.inner_text()
    assert HOSTILE in row.inner_text() and row.query_selector("img") is None
    browser.shot("sessions")

    page.click(f'tr[data-session="{session_id}"] button[data-action="close"]')
    page.wait_for_selector(f'tr[data-session="{session_id}"] td.state-dead', timeout=30_000)
    assert "Closed session" in page.inner_text("#notice")
    browser.shot("session-closed")

    page.click('.tab[data-view="audit"]')
    page.fill("#audit-action", "session.close.admin")
    entry = '#audit-table tr[data-action="session.close.admin"]'
    deadline = time.monotonic() + 20
    while True:  # the trail is written in the background, every half second
        page.click('#audit-form button[type="submit"]')
        page.wait_for_selector('body[data-loaded="audit"]')
        if page.query_selector(entry) is not None or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)
    text = page.inner_text(entry)
    assert session_id in text and "admin" in text and "ok" in text
    browser.shot("audit")

    # The API agrees: the owner's next call is 410.
    resp = requests.post(
        f"{live.url}/sessions/{session_id}/execute",
        json={"code": "1"},
        headers=nina,
        timeout=30,
    )
    assert resp.status_code == 410
    assert "closed by an administrator" in resp.json()["message"]

    for view in ("services", "node"):
        page.click(f'.tab[data-view="{view}"]')
        page.wait_for_selector(f'body[data-loaded="{view}"]', timeout=60_000)
        browser.shot(view)
    assert page.inner_text("#drain-state") == "Accepting new work."

    # The token is in this tab's sessionStorage, never in a cookie.
    stored = page.evaluate("sessionStorage.getItem('o16n.console')")
    access = json.loads(stored)["access"] if stored else None
    assert access
    assert access not in page.evaluate("document.cookie")
    assert all(access not in c["value"] for c in page.context.cookies())

    assert browser.violations() == []
    assert browser.errors == []

    # An expired access token is renewed with the refresh token, and the call retried
    # (the page keeps its tokens in sessionStorage: a reload stays signed in).
    page.evaluate(
        "(() => { const t = JSON.parse(sessionStorage.getItem('o16n.console'));"
        " t.access = 'expired'; sessionStorage.setItem('o16n.console', JSON.stringify(t)); })()"
    )
    page.reload()
    page.wait_for_selector('body[data-loaded="sessions"]')
    kept = json.loads(page.evaluate("sessionStorage.getItem('o16n.console')"))
    assert kept["access"] not in ("expired", access)
    assert all("401" in e for e in browser.errors), browser.errors  # the refused call

    with page.expect_response(
        lambda r: "/login/refreshToken" in r.url and r.request.method == "DELETE"
    ) as revoked:  # signing out revokes the refresh token too
        page.click("#sign-out")
    assert revoked.value.status == 200
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("sessionStorage.getItem('o16n.console')") is None
    assert page.inner_text("#notice") == "Signed out."
    resp = requests.post(
        f"{live.url}/login/refreshToken", json={"refreshToken": kept["refresh"]}, timeout=30
    )
    assert resp.status_code == 401
    browser.shot("signed-out")
    assert browser.violations() == []
    assert page.title() == "o16n console"


def test_an_owner_recycles_a_pool_and_drains_the_node(live: LiveServer, browser: Browser) -> None:
    resp = requests.post(
        f"{live.url}/services/Adder/1",
        json={
            "runtimeType": "Python",
            "code": "y = x + 1",
            "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
            "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
        },
        headers=live.headers,
        timeout=120,
    )
    assert resp.status_code == 201, resp.text
    page = browser.page
    _sign_in(browser, live, "admin", ADMIN_PASSWORD)
    page.wait_for_selector('body[data-loaded="sessions"]')

    page.click('.tab[data-view="services"]')
    row = 'tr[data-service="Adder/1"]'
    page.wait_for_selector(row)
    assert "admin" in page.inner_text(row)
    browser.shot("services")
    page.click(f'{row} button[data-action="recycle"]')
    page.wait_for_selector("#notice:not([hidden])")
    assert page.inner_text("#notice") == "Recycling the pool of Adder 1."
    browser.shot("recycled")

    page.click('.tab[data-view="node"]')
    page.wait_for_selector('body[data-loaded="node"]', timeout=60_000)
    page.fill("#drain-reason", "kernel <b>update</b>")
    page.click("#drain-button")
    page.wait_for_selector("#undrain-button:enabled")  # the node view, drawn again
    assert "kernel <b>update</b>" in page.inner_text("#drain-state")
    browser.shot("drained")
    resp = requests.post(
        f"{live.url}/sessions", json={"runtimeType": "Python"}, headers=live.headers, timeout=30
    )
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    page.click("#undrain-button")
    page.wait_for_selector("#drain-button:enabled")
    assert page.inner_text("#drain-state") == "Accepting new work."
    browser.shot("undrained")

    page.click('.tab[data-view="audit"]')
    page.fill("#audit-action", "node.*")
    deadline = time.monotonic() + 20
    while True:  # the trail is written in the background, every half second
        page.click('#audit-form button[type="submit"]')
        page.wait_for_selector('body[data-loaded="audit"]')
        if len(page.query_selector_all("#audit-table tr[data-action]")) >= 2:
            break
        assert time.monotonic() < deadline, page.inner_text("#audit-table")
        page.wait_for_timeout(300)
    actions = [r.get_attribute("data-action") for r in page.query_selector_all("tr[data-action]")]
    assert actions == ["node.undrain", "node.drain"]
    browser.shot("audit-node")
    assert browser.violations() == []
    assert browser.errors == []


def test_a_non_owner_is_told_the_owner_role_is_required(live: LiveServer, browser: Browser) -> None:
    reader = _user(live, "rita", role="Reader")
    _sign_in(browser, live, reader["username"], reader["password"])
    page = browser.page
    page.wait_for_selector("#login-error:not([hidden])")
    assert "Owner role required" in page.inner_text("#login-error")
    assert page.is_hidden("#app-view")
    assert page.evaluate("sessionStorage.getItem('o16n.console')") is None
    browser.shot("owner-required")
    assert browser.violations() == []
    # The only error is the refused call itself (Chromium logs every 403 it receives).
    assert all("403" in e for e in browser.errors), browser.errors
