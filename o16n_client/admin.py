"""``o16n admin …``: the operator's command line, over the REST API (``/admin/…``).

Tables by default, ``--json`` for scripts. Exit codes: 0 done; 1 the server refused (a 4xx
or 5xx; its message on stderr) or the diagnostics found a failure; 2 bad usage; 3 the
server cannot be reached or the caller cannot be authenticated (no credentials, a wrong
password, an expired login, a credentials file others could read).

Also ``python -m o16n_client.admin``. It imports nothing of the server: it speaks HTTP.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import itertools
import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from o16n_client import capacity
from o16n_client.http import (
    OK,
    REFUSED,
    UNREACHABLE,
    USAGE,
    Client,
    CliError,
    credentials_path,
    read_credentials,
    stored_pair,
    write_credentials,
)

Columns = list[tuple[str, str]]  # (heading, key; dotted for nested)

USERS: Columns = [
    ("NAME", "name"),
    ("ROLE", "role"),
    ("SOURCE", "source"),
    ("DISABLED", "disabled"),
    ("LAST LOGIN", "lastLogin"),
    ("SESSIONS", "sessions"),
    ("SERVICES", "services"),
    ("SNAPSHOTS", "snapshots"),
]
SESSIONS: Columns = [
    ("ID", "id"),
    ("NAME", "name"),
    ("OWNER", "owner"),
    ("STATE", "state"),
    ("CREATED", "created"),
    ("LAST USED", "lastUsed"),
]
SERVICES: Columns = [
    ("NAME", "name"),
    ("VERSION", "version"),
    ("PUBLISHER", "publisher"),
    ("POOL", "pool.status"),
    ("IDLE", "pool.idle"),
    ("BUSY", "pool.busy"),
    ("QUEUED", "pool.queued"),
    ("REJECTED", "pool.rejected"),
    ("SERVED", "requestsServed"),
]
SNAPSHOTS: Columns = [
    ("ID", "id"),
    ("NAME", "name"),
    ("OWNER", "owner"),
    ("CREATED", "created"),
    ("SIZE", "sizeBytes"),
]
BATCHES: Columns = [
    ("ID", "id"),
    ("SERVICE", "service"),
    ("VERSION", "version"),
    ("OWNER", "owner"),
    ("STATE", "state"),
    ("DONE", "completed"),
    ("TOTAL", "total"),
    ("CREATED", "created"),
]
AUDIT: Columns = [
    ("TIME", "time"),
    ("ACTOR", "actor"),
    ("ADDRESS", "address"),
    ("ACTION", "action"),
    ("TARGET", "target"),
    ("OUTCOME", "outcome"),
    ("STATUS", "status"),
]
STEPS: Columns = [("STEP", "name"), ("STATUS", "status"), ("MS", "durationMs"), ("ERROR", "error")]
ENTRY_HELP = "unix:///path/docker.sock or ssh://user@host[:port]"
NODES: Columns = [
    ("NAME", "name"),
    ("ENTRY", "entry"),
    ("STATE", "state"),
    ("VERSION", "version"),
    ("LOAD", "load"),
    ("ERROR", "error"),
]


# --- output ---------------------------------------------------------------------------------


def _get(item: Any, key: str) -> Any:
    for part in key.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\n", " ")


def table(rows: list[dict[str, Any]], columns: Columns) -> str:
    cells = [[_cell(_get(row, key)) for _, key in columns] for row in rows]
    widths = [
        max([len(heading), *(len(line[i]) for line in cells)])
        for i, (heading, _) in enumerate(columns)
    ]
    lines = [[h for h, _ in columns], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def pairs(item: dict[str, Any], indent: str = "") -> str:
    out = []
    for key, value in item.items():
        if isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out.append(pairs(value, indent + "  "))
        else:
            out.append(f"{indent}{key}: {_cell(value)}")
    return "\n".join(line for line in out if line)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def show(self, data: Any, columns: Columns | None = None) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2))
        elif columns is not None and isinstance(data, list):
            print(table(data, columns))
        elif isinstance(data, dict):
            print(pairs(data))
        else:
            print(_cell(data))


class Spinner:
    """A spinner on stderr while a long call runs, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.active = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{frame} {self.label}")
            sys.stderr.flush()
            if self._stop.wait(0.1):
                break
        sys.stderr.write("\r" + " " * (len(self.label) + 2) + "\r")
        sys.stderr.flush()

    def __enter__(self) -> Spinner:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()


# --- the parser -----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options valid before and after the subcommand (after: without defaults, so they do
    not override what came before)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--server", default=default(None), help="server URL (O16N_SERVER)")
    parser.add_argument("--username", default=default(None), help="user name (O16N_USERNAME)")
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="JSON output, for scripts"
    )
    parser.add_argument(
        "--timeout", type=float, default=default(30.0), help="seconds per request (30)"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="o16n admin",
        description="Administer an o16n server over its REST API (Owner role).",
        epilog="exit codes: 0 ok, 1 refused by the server (message on stderr) or diagnostics "
        "failed, 2 usage, 3 server unreachable or authentication failed",
    )
    _common(top, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)
    sub = top.add_subparsers(dest="group", required=True)

    def group(name: str, help: str) -> Any:
        return sub.add_parser(name, help=help).add_subparsers(dest="action", required=True)

    def leaf(parent: Any, name: str, help: str, *args: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common])
        for arg in args:
            cmd.add_argument(arg)
        return cmd

    login = sub.add_parser("login", help="log in and store the token pair (mode 0600)")
    _common(login, suppress=True)
    login.add_argument("--password-stdin", action="store_true", help="read the password")
    logout = sub.add_parser("logout", help="revoke and forget the stored login")
    _common(logout, suppress=True)

    users = group("users", "user accounts")
    leaf(users, "list", "every account")
    leaf(users, "show", "one account", "name")
    add = leaf(users, "add", "add an account (no --password-stdin: one is generated)", "name")
    add.add_argument("--role", default="Contributor", help="Owner, Contributor or Reader")
    add.add_argument("--password-stdin", action="store_true")
    leaf(users, "set-role", "change a role", "name", "role")
    leaf(users, "disable", "disable (ends the user's logins)", "name")
    leaf(users, "enable", "enable", "name")
    pw = leaf(users, "set-password", "set a password (ends the user's logins)", "name")
    pw.add_argument("--password-stdin", action="store_true")
    leaf(users, "end-logins", "end all the user's logins", "name")
    delete = leaf(users, "delete", "delete (closes their sessions)", "name")
    delete.add_argument("--transfer-to", help="hand services and snapshots to this user first")
    transfer = leaf(users, "transfer", "hand services and snapshots over", "name")
    transfer.add_argument("--to", required=True)

    sessions = group("sessions", "everyone's sessions")
    listing = leaf(sessions, "list", "every session")
    listing.add_argument("--owner")
    listing.add_argument("--state", choices=["idle", "busy", "dead"])
    listing.add_argument("--stats", action="store_true", help="memory and CPU (slower)")
    leaf(sessions, "close", "end a session now", "id")
    leaf(sessions, "cancel", "interrupt what runs in a session", "id")

    services = group("services", "services and their pools")
    leaf(services, "list", "every version with its pool")
    leaf(services, "recycle", "replace a version's containers", "name", "version")

    snapshots = group("snapshots", "snapshots")
    leaf(snapshots, "list", "every snapshot with its size")

    batches = group("batches", "everyone's batch executions")
    leaf(batches, "list", "newest first").add_argument("--limit", type=int)
    leaf(batches, "cancel", "cancel one", "id")

    node = group("node", "the node")
    leaf(node, "show", "engine, containers, images, disk, drain").add_argument(
        "--no-engine-disk", action="store_true", help="skip docker system df"
    )
    drain = leaf(node, "drain", "refuse new sessions, publishes and batches")
    drain.add_argument("--reason")
    drain.add_argument("--retry-after", type=int)
    leaf(node, "undrain", "accept new work again")

    nodes = group("nodes", "compute nodes (Docker engines besides the local one)")
    leaf(nodes, "list", "each node's state, version, load; the controller's SSH public key")
    for name, help, count in (
        ("set", "make these the compute nodes (none: only the local engine)", "*"),
        ("add", "add compute nodes", "+"),
        ("remove", "remove compute nodes", "+"),
    ):
        entries = leaf(nodes, name, help)
        entries.add_argument("entries", nargs=count, metavar="entry", help=ENTRY_HELP)
    leaf(nodes, "drain", "place no new containers on a node", "name")
    leaf(nodes, "undrain", "place new containers on a node again", "name")

    audit = sub.add_parser("audit", help="the audit trail, newest first", parents=[common])
    audit.add_argument("--since", help="ISO 8601 or Unix seconds")
    audit.add_argument("--until", help="ISO 8601 or Unix seconds")
    audit.add_argument("--actor")
    audit.add_argument("--action", help="an action, or a prefix like user.*")
    audit.add_argument("--limit", type=int, default=100, help="entries to show (100)")
    audit.add_argument("--all", action="store_true", help="every matching entry")
    audit.add_argument("--page-size", type=int, default=1000, help="entries per request (1000)")

    sub.add_parser("diagnostics", help="run the diagnostics", parents=[common])
    capacity.add_parser(sub, common)
    return top


# --- commands -------------------------------------------------------------------------------


def _password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        raise CliError("no password: give --password-stdin or run it in a terminal", USAGE)
    if not value:
        raise CliError("the password is empty", USAGE)
    return value


def _server(args: argparse.Namespace, stored: dict[str, Any] | None) -> str:
    server = args.server or os.environ.get("O16N_SERVER") or (stored or {}).get("server")
    if not server:
        raise CliError("no server: give --server or set O16N_SERVER (or log in)", USAGE)
    return str(server)


def same_server(one: str, other: str) -> bool:
    """Whether two server URLs name the same origin (scheme, host and port): a stored
    token goes only to the server that issued it."""
    a, b = urllib.parse.urlsplit(one), urllib.parse.urlsplit(other)
    try:
        return (a.scheme.lower(), a.hostname, a.port or _PORTS.get(a.scheme.lower())) == (
            b.scheme.lower(),
            b.hostname,
            b.port or _PORTS.get(b.scheme.lower()),
        )
    except ValueError:  # a port that is no number
        return False


_PORTS = {"http": 80, "https": 443}


def _stored(args: argparse.Namespace) -> dict[str, Any] | None:
    """The stored login, read only when the environment gives no credentials of its own."""
    username = args.username or os.environ.get("O16N_USERNAME")
    if os.environ.get("O16N_TOKEN") or (username and os.environ.get("O16N_PASSWORD")):
        return None
    return read_credentials(credentials_path())


def _server_of(args: argparse.Namespace) -> str:
    """The server ``connect`` uses, found the same way but without a request: capacity
    checks it before the token is sent anywhere."""
    return _server(args, _stored(args))


def connect(args: argparse.Namespace) -> Client:
    """A client with the caller's credentials (see ``o16n_client.http``)."""
    username = args.username or os.environ.get("O16N_USERNAME")
    token = os.environ.get("O16N_TOKEN")
    password = os.environ.get("O16N_PASSWORD")
    stored = _stored(args)
    client = Client(_server(args, stored), timeout=args.timeout)
    if token:
        client.token = token
    elif username and password:
        client.login(username, password)
    elif stored is not None:
        if not same_server(client.server, str(stored.get("server", ""))):
            raise CliError(
                f"the stored login is for {stored.get('server')}, not {client.server}: run "
                f"`o16n admin login --server {client.server}`, or set O16N_TOKEN",
                UNREACHABLE,
            )
        client.stored, client.path = stored, credentials_path()
        client.token = str(stored.get("access_token", ""))
    else:
        raise CliError(
            "no credentials: run `o16n admin login`, or set O16N_TOKEN, or O16N_USERNAME "
            "and O16N_PASSWORD",
            UNREACHABLE,
        )
    return client


def do_login(args: argparse.Namespace, out: Output) -> int:
    username = args.username or os.environ.get("O16N_USERNAME")
    if not username:
        raise CliError("no user name: give --username or set O16N_USERNAME", USAGE)
    client = Client(_server(args, None), timeout=args.timeout)
    password = os.environ.get("O16N_PASSWORD") or _password(args.password_stdin, "Password: ")
    reply = client.login(username, password)
    path = credentials_path()
    write_credentials(path, stored_pair(client.server, username, reply))
    out.show({"server": client.server, "username": username, "credentials": str(path)})
    return OK


def do_logout(args: argparse.Namespace, out: Output) -> int:
    path = credentials_path()
    stored = read_credentials(path)
    if stored is not None:  # revoked where it was issued, whatever --server says
        client = Client(str(stored.get("server") or _server(args, stored)), timeout=args.timeout)
        token = str(stored.get("refresh_token", ""))
        with contextlib.suppress(CliError):  # forgotten here all the same
            client.raw("DELETE", "/login/refreshToken", query={"refreshToken": token}, auth=False)
        path.unlink(missing_ok=True)
    out.show({"loggedOut": stored is not None})
    return OK


def users(client: Client, args: argparse.Namespace, out: Output) -> int:
    name = getattr(args, "name", None)
    path = f"/admin/users/{_seg(name)}" if name else "/admin/users"
    if args.action == "list":
        out.show(client.call("GET", "/admin/users"), USERS)
    elif args.action == "show":
        out.show(client.call("GET", path))
    elif args.action == "add":
        body: dict[str, Any] = {"name": args.name, "role": args.role}
        if args.password_stdin:
            body["password"] = _password(True, "")
        out.show(client.call("POST", "/admin/users", body))
    elif args.action == "delete":
        out.show(client.call("DELETE", path, query={"transferTo": args.transfer_to}))
    elif args.action == "transfer":
        out.show(client.call("POST", f"{path}/transfer", {"to": args.to}))
    else:
        changes: dict[str, dict[str, Any]] = {
            "set-role": {"role": getattr(args, "role", None)},
            "disable": {"disabled": True},
            "enable": {"disabled": False},
            "end-logins": {"endLogins": True},
        }
        if args.action == "set-password":
            change = {"password": _password(args.password_stdin, "New password: ")}
        else:
            change = changes[args.action]
        out.show(client.call("PATCH", path, change))
    return OK


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def sessions(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "list":
        query = {"owner": args.owner, "state": args.state, "stats": args.stats or None}
        out.show(client.call("GET", "/admin/sessions", query=query), SESSIONS)
    elif args.action == "close":
        out.show(client.call("DELETE", f"/admin/sessions/{_seg(args.id)}"))
    else:
        out.show(client.call("POST", f"/admin/sessions/{_seg(args.id)}/cancel"))
    return OK


def services(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "list":
        out.show(client.call("GET", "/admin/services"), SERVICES)
    else:
        path = f"/admin/services/{_seg(args.name)}/{_seg(args.version)}/recycle"
        out.show(client.call("POST", path))
    return OK


def snapshots(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.show(client.call("GET", "/admin/snapshots"), SNAPSHOTS)
    return OK


def batches(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "list":
        out.show(client.call("GET", "/admin/batches", query={"limit": args.limit}), BATCHES)
    else:
        out.show(client.call("DELETE", f"/admin/batches/{_seg(args.id)}"))
    return OK


def node(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "show":
        query = {"engineDisk": False} if args.no_engine_disk else None
        out.show(client.call("GET", "/admin/node", query=query))
    elif args.action == "drain":
        body = {"reason": args.reason, "retryAfter": args.retry_after}
        out.show(client.call("POST", "/admin/node/drain", {k: v for k, v in body.items() if v}))
    else:
        out.show(client.call("POST", "/admin/node/undrain"))
    return OK


#: ``o16n admin nodes set|add|remove`` → the ``/computenodes`` method.
NODE_LIST_METHODS = {"set": "POST", "add": "PUT", "remove": "DELETE"}


def nodes(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "list":
        answer = client.call("GET", "/admin/nodes")
        if out.as_json:
            out.show(answer)
        else:
            print(table(answer["nodes"], NODES))
            if answer.get("error"):
                print(answer["error"])
            print(f"ssh public key: {answer.get('sshPublicKey') or '-'}")
    elif args.action in NODE_LIST_METHODS:
        method = NODE_LIST_METHODS[args.action]
        answer = client.call(method, "/computenodes", {"entries": args.entries})
        if out.as_json:
            out.show(answer)
        else:
            print("\n".join(answer["computeNodes"]) or "(only the local engine)")
    else:
        path = f"/admin/nodes/{_seg(args.name)}/drain"
        out.show(client.call("POST" if args.action == "drain" else "DELETE", path))
    return OK


def audit(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Pages through the cursor until ``--limit`` entries (or all, with ``--all``)."""
    if args.limit < 1 or not 1 <= args.page_size <= 1000:
        raise CliError("--limit must be at least 1, --page-size 1 to 1000", USAGE)
    entries: list[dict[str, Any]] = []
    cursor = None
    while args.all or len(entries) < args.limit:
        page_size = args.page_size if args.all else min(args.page_size, args.limit - len(entries))
        query = {
            "since": args.since,
            "until": args.until,
            "actor": args.actor,
            "action": args.action,
            "limit": page_size,
            "cursor": cursor,
        }
        page = client.call("GET", "/admin/audit", query=query)
        entries.extend(page["entries"])
        cursor = page.get("nextCursor")
        if not cursor:
            break
    out.show(entries, AUDIT)
    return OK


def diagnostics(client: Client, args: argparse.Namespace, out: Output) -> int:
    with Spinner("running diagnostics (up to a minute)…"):
        report = client.call("POST", "/admin/diagnostics", timeout=max(args.timeout, 120.0))
    if out.as_json:
        out.show(report)
    else:
        print(table(report["steps"], STEPS))
        cleanup = report.get("cleanup") or {}
        print(f"cleanup: {cleanup.get('status')}  " + "; ".join(cleanup.get("errors") or []))
        print(f"{report['status']} in {report['durationMs']:.0f} ms")
    if report.get("status") != "pass":
        failed = ", ".join(report.get("failed") or []) or "cleanup"
        print(f"o16n admin: diagnostics failed: {failed}", file=sys.stderr)
        return REFUSED
    return OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Output], int]] = {
    "users": users,
    "sessions": sessions,
    "services": services,
    "snapshots": snapshots,
    "batches": batches,
    "node": node,
    "nodes": nodes,
    "audit": audit,
    "diagnostics": diagnostics,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for bad usage, 0 for --help
        return int(exc.code or 0)
    out = Output(args.json)
    try:
        if args.group == "login":
            return do_login(args, out)
        if args.group == "logout":
            return do_logout(args, out)
        if args.group == "capacity":  # checks its target before it logs in
            return capacity.run(args, connect, _server_of)
        return COMMANDS[args.group](connect(args), args, out)
    except CliError as exc:
        print(f"o16n admin: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
