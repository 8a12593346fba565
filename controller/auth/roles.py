"""Roles (ML Server's Owner / Contributor / Reader) and the caller's identity."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiohttp import web

from controller.errors import ForbiddenError


class Role(enum.Enum):
    OWNER = "Owner"
    CONTRIBUTOR = "Contributor"
    READER = "Reader"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> Role:
        for role in cls:
            if role.value.lower() == text.strip().lower():
                return role
        raise ValueError(f"unknown role '{text}' (choose Owner, Contributor or Reader)")


_RANK = {Role.READER: 0, Role.CONTRIBUTOR: 1, Role.OWNER: 2}


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
