"""Roles (ML Server's Owner / Contributor / Reader): below the store, which keeps a user's
role, and below auth, which checks it (``auth.roles.Identity``)."""

from __future__ import annotations

import enum


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
