import pytest

from o16n_client import sdk_compat


@pytest.fixture(autouse=True, scope="session")
def _sdk_on_modern_python() -> None:
    """Microsoft's SDK as its users run it on Python 3.8+: with o16n's client-side fix."""
    sdk_compat.patch()
