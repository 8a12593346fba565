"""Fixtures of the auth tests: directories to sign in against.

``ldap_server`` is a real OpenLDAP ``slapd`` (``tests/ldap_server.py``): one server for the
whole session (per xdist worker), started on first use and stopped at the end; a test that
stops it (``with ldap_server.stopped():``) gets it back running when the block ends. Tests
must not change its data. Without Debian's slapd installed the tests that use it skip,
saying so (``scripts/ensure-ldap.sh`` installs it). ``oidc_provider`` is an Azure AD
look-alike identity provider on 127.0.0.1 (``tests/oidc_provider.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import make_settings
from tests.ldap_server import LdapServer, available
from tests.oidc_provider import OidcProvider


async def directory_client(
    aiohttp_client: Any, data_dir: Path, document: dict[str, Any], **settings: Any
) -> TestClient[Any, Any]:
    """A client of an app whose ``O16N_APPSETTINGS`` is ``document`` (written in
    ``data_dir``), with ``settings`` besides: how the sign-in tests configure a directory."""
    data_dir.mkdir(exist_ok=True)
    path = data_dir / "appsettings.json"
    path.write_text(json.dumps(document))
    app = create_app(make_settings(data_dir, appsettings=path, **settings))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


# --- LDAP / Active Directory: a real slapd -------------------------------------------------


@pytest.fixture(scope="session")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """A running ``LdapServer``: ``.users[key]`` (``.login``, ``.password``, ``.dn``,
    ``.groups``), ``.config(ldaps=...)`` an ``LdapConfig``, ``.appsettings(ldaps=...)``
    ML Server's sections, ``.ca_file``, ``.binds()``, ``.stopped()``, ``.paused()``."""
    reason = available()
    if reason:
        pytest.skip(reason)
    with LdapServer(tmp_path_factory.mktemp("slapd")) as server:
        yield server


# --- Azure AD / OIDC: an identity provider on 127.0.0.1 ------------------------------------


@pytest.fixture
def oidc_provider() -> Iterator[OidcProvider]:
    """A running Azure AD look-alike (``tests/oidc_provider.py``): ``.authority``,
    ``.appsettings(owner=[...])``, ``.aad_config()``, ``.token(user, groups=[...])``,
    ``.rotate()``, ``.down()``/``.up()``, ``.jwks_fetches``. Its own thread, any event loop."""
    with OidcProvider() as provider:
        yield provider


# --- end of the Azure AD / OIDC block -------------------------------------------------------
