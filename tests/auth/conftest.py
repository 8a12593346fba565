"""Fixtures of the auth tests: directories to sign in against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.oidc_provider import OidcProvider

# --- Azure AD / OIDC: an identity provider on 127.0.0.1 ------------------------------------


@pytest.fixture
def oidc_provider() -> Iterator[OidcProvider]:
    """A running Azure AD look-alike (``tests/oidc_provider.py``): ``.authority``,
    ``.appsettings(owner=[...])``, ``.aad_config()``, ``.token(user, groups=[...])``,
    ``.rotate()``, ``.down()``/``.up()``, ``.jwks_fetches``. Its own thread, any event loop."""
    with OidcProvider() as provider:
        yield provider


# --- end of the Azure AD / OIDC block -------------------------------------------------------
