"""The ``o16n`` command (also ``python -m controller``).

o16n serve                               run the server (configuration: O16N_* variables)
o16n users add NAME [--role R]           add a user (password from --password-stdin or prompted)
o16n users set-role NAME ROLE
o16n users set-password NAME
o16n users disable NAME | enable NAME
o16n users list                          every account: name, role, state, source
                                         (local, ldap, aad), a directory's name and email
o16n image tag | build                   the runtime image's tag; build it if missing
o16n admin …                             administer a running server over its REST API
                                         (``o16n_client.admin``; ``o16n admin --help``)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Sequence

from controller.auth.passwords import hash_password_async
from controller.errors import O16nError
from controller.roles import Role
from controller.settings import Settings, SettingsError
from controller.store.db import Database, open_database
from controller.store.users import UsersRepo, refuse_directory_owned


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="o16n", description="o16n operationalization server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server")
    sub.add_parser("admin", help="administer a running server (o16n admin --help)")

    users = sub.add_parser("users", help="manage user accounts").add_subparsers(
        dest="action", required=True
    )
    add = users.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", default="Contributor", help="Owner, Contributor or Reader")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    role = users.add_parser("set-role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role")
    pw = users.add_parser("set-password", help="change a password (ends the user's logins)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    for action in ("disable", "enable"):
        users.add_parser(action, help=f"{action} an account").add_argument("name")
    users.add_parser("list", help="list accounts")

    image = sub.add_parser("image", help="the runtime image").add_subparsers(
        dest="action", required=True
    )
    image.add_parser("tag", help="print the runtime image tag")
    image.add_parser("build", help="build the runtime image unless it is up to date")
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("o16n: the passwords differ")
    if len(password) < 8:
        raise SystemExit("o16n: a password needs at least 8 characters")
    return password


async def _audit(db: Database, action: str, name: str, detail: dict[str, object]) -> None:
    """Record a CLI change in the audit trail (actor ``cli``), like the server's own."""
    from controller.audit.log import emit
    from controller.store.audit import AuditEntry, AuditRepo

    entry = AuditEntry(time.time(), "cli", "local", action, name, "ok", detail=detail)
    await AuditRepo(db).append([entry])
    emit(entry)


async def _local_only(
    repo: UsersRepo, name: str, *, password: bool = False, role: bool = False
) -> None:
    """Refuse (409, exit 1) what a directory user's directory decides, as the API does."""
    user = await repo.by_name(name)
    if user is not None:
        refuse_directory_owned(user.username, user.source, password=password, role=role)


async def _users(settings: Settings, args: argparse.Namespace) -> None:
    db = await open_database(settings)
    try:
        repo = UsersRepo(db)
        if args.action == "add":
            from controller.reserved_names import refuse_reserved

            refuse_reserved(args.name, "user name")  # diagnostics' temporaries
            role = Role.parse(args.role)
            hashed = await hash_password_async(_read_password(args.password_stdin))
            await repo.add(args.name, hashed, role)
            await _audit(db, "user.create", args.name, {"role": role.value, "password": "set"})
            print(f"added {args.name} ({role.value})")
        elif args.action == "set-role":
            role = Role.parse(args.role)
            await _local_only(repo, args.name, role=True)
            await repo.update(args.name, role=role)
            await _audit(db, "user.change", args.name, {"role": role.value})
            print(f"{args.name} is now {role.value}")
        elif args.action == "set-password":
            await _local_only(repo, args.name, password=True)  # before asking for one
            hashed = await hash_password_async(_read_password(args.password_stdin))
            await repo.update(args.name, password_hash=hashed, revoke_tokens=True)
            await _audit(db, "user.change", args.name, {"password": "set"})
            print(f"password of {args.name} changed; its logins were ended")
        elif args.action in ("disable", "enable"):
            disabled = args.action == "disable"
            await repo.update(args.name, disabled=disabled, revoke_tokens=disabled)
            await _audit(db, "user.change", args.name, {"disabled": disabled})
            print(f"{args.name} {args.action}d")
        elif args.action == "list":
            for user in await repo.all():
                state = "disabled" if user.disabled else "active"
                directory = [user.display_name or "", user.email or ""]  # where known
                print("\t".join([user.username, user.role.value, state, user.source, *directory]))
    finally:
        await db.close()


async def _image(settings: Settings, action: str) -> None:
    from controller.runtime.docker.image import command

    await command(settings, action, lambda line: print(line, file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["admin"]:  # the HTTP client: no settings, no server internals
        from o16n_client.admin import main as admin

        return admin(argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            from controller import logs
            from controller.app import run
            from controller.auth.appsettings import configured

            logs.configure(settings.log_level, settings.log_format)
            configured(settings)  # a bad appsettings.json stops the start here, named
            run(settings)
        elif args.command == "users":
            asyncio.run(_users(settings, args))
        elif args.command == "image":
            asyncio.run(_image(settings, args.action))
    except SettingsError as exc:
        print(f"o16n: {exc}", file=sys.stderr)
        return 2
    except (O16nError, ValueError) as exc:
        print(f"o16n: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
