"""The caller's identity: who sends a request, with which role (``controller.roles``)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from controller.errors import ForbiddenError
from controller.roles import Role


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller of one request."""

    user_id: int
    username: str
    role: Role

    @property
    def is_owner(self) -> bool:
        return self.role is Role.OWNER

    def require(self, role: Role, action: str) -> None:
        """Raise 403 unless this caller holds ``role`` or a higher one."""
        if self.role.rank < role.rank:
            raise ForbiddenError(
                f"{action} requires the {role.value} role; '{self.username}' is {self.role.value}"
            )


#: The caller of a request (set by ``auth_middleware``).
IDENTITY = web.RequestKey("identity", Identity)
