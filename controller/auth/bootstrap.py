"""First-start secrets: the JWT signing key and the ``admin`` account. Never a default password."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from controller.auth.passwords import generate_password, hash_password_async
from controller.roles import Role
from controller.settings import Settings
from controller.store.users import UsersRepo

log = logging.getLogger(__name__)

ADMIN = "admin"


def write_secret_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 (never widening an existing file)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # noqa: PTH101


def jwt_secret(settings: Settings) -> str:
    """The configured signing key, else the one generated on first start."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    write_secret_file(path, secret + "\n")
    return secret


async def ensure_admin(settings: Settings, users: UsersRepo) -> None:
    """On first start (no users at all) create ``admin`` (Owner)."""
    if await users.all():
        return
    if settings.admin_password is not None:
        password = settings.admin_password.get_secret_value()
        source = "O16N_ADMIN_PASSWORD"
    else:
        password = generate_password()
        path = settings.data_dir / "admin-password"
        write_secret_file(path, password + "\n")
        source = str(path.resolve())
    await users.add(ADMIN, await hash_password_async(password), Role.OWNER)
    log.warning(
        "created the 'admin' account (Owner); its password is in %s",
        source,
        extra={"source": source},
    )
    print(f"o16n: created user 'admin'; password: {source}", flush=True)
