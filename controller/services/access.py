"""Who may do what to a web service (API.md §4.3). Checked here, next to the data.

* publish: Contributor or Owner; a name belongs to whoever published its first version,
  so only they (or an Owner) may add versions to it;
* patch, delete, pool changes: the version's publisher while still Contributor or Owner,
  or any Owner;
* list, read and consume: everyone authenticated;
* ``code`` and ``initCode``: shown to the publisher and to Owners only.
"""

from __future__ import annotations

from controller.auth.roles import Identity
from controller.errors import ForbiddenError
from controller.roles import Role
from controller.store.services import ServiceRecord


def check_publish(caller: Identity, name: str, first: ServiceRecord | None) -> None:
    caller.require(Role.CONTRIBUTOR, "publishing a web service")
    if first is not None and first.publisher_id != caller.user_id and not caller.is_owner:
        raise ForbiddenError(
            f"another user ('{first.publisher_name}') owns the service '{name}' and you are "
            "not authorized to publish to it"
        )


def can_manage(caller: Identity, record: ServiceRecord) -> bool:
    if caller.is_owner:
        return True
    return record.publisher_id == caller.user_id and caller.role.rank >= Role.CONTRIBUTOR.rank


def check_manage(caller: Identity, record: ServiceRecord, action: str) -> None:
    if not can_manage(caller, record):
        raise ForbiddenError(
            f"only the owner of {record.name}/{record.version} ('{record.publisher_name}') or an "
            f"Owner can {action} it"
        )


def can_see_code(caller: Identity, record: ServiceRecord) -> bool:
    return caller.is_owner or record.publisher_id == caller.user_id
