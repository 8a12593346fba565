"""Benchmark of signing in: local users, LDAP users and Azure AD (OIDC) bearer tokens, in one run.

Starts a real OpenLDAP slapd and an Azure AD look-alike identity provider (the tests' own,
``tests/ldap_server.py`` and ``tests/oidc_provider.py``), and four o16n servers (the fake
engine: no container is involved): local accounts only (the same-run baseline: a local
login, a local token), LDAP with roles cached for an hour, LDAP with roles looked up on
every request (``CacheLifeTimeInMinutes: 0``), and Azure AD.

Figures (p50 / p90 in ms, sequential requests over one keep-alive connection):

- ``POST /login``: a local user (argon2), an LDAP user's first login (its account is
  recorded), later LDAP logins; failed logins: wrong password vs unknown user, local and
  LDAP (the two must cost the same: the difference would tell who exists).
- ``GET /sessions`` with a token: local (the baseline), an LDAP user's with cached roles,
  with roles looked up each time; an Azure AD token's first request (verified, user known),
  a new Azure AD user's first request (its account is recorded), and later requests.

    .venv/bin/python -m bench.login [--rounds 40] [--tree DIR]

Like the status bench it drives the servers over HTTP only; the directory servers come from
``tests/``. Writes bench/results/login-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api
from bench._server import BenchError, Server, common_options, say, start_o16n, summary
from tests.ldap_server import LdapServer
from tests.oidc_provider import OidcProvider

INSTANCE = "o16n-bench-login"
LABEL = f"o16n.instance={INSTANCE}"
OWNERS = "0b5e0000-0000-4000-8000-00000000c0de"

#: failed logins are the point here: the throttle must not answer them
NO_THROTTLE = {
    "O16N_LOGIN_MAX_FAILURES": "1000000",
    "O16N_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000000",
    "O16N_LOGIN_MAX_FAILURES_PER_USER": "1000000",
    "O16N_ENGINE": "fake",
    "O16N_WARM_POOL_SIZE": "0",
    "O16N_SERVICE_WARM_POOL_SIZE": "0",
}


def timed(rounds: int, call: Callable[[], None]) -> list[float]:
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def expect(api: Api, method: str, path: str, status: int, body: Any = None) -> None:
    got, answer = api.call(method, path, body)
    if got != status:
        raise BenchError(f"{method} {path} answered {got}, not {status}: {answer!r}")


def login_call(api: Api, name: str, password: str, status: int) -> Callable[[], None]:
    return lambda: expect(api, "POST", "/login", status, {"username": name, "password": password})


def serve(tmp: Path, name: str, password: str, document: dict[str, Any], **env: str) -> Server:
    path = tmp / f"{name}.appsettings.json"
    path.write_text(json.dumps(document))
    server = start_o16n(
        tmp,
        password,
        None,
        instance=INSTANCE,
        name=name,
        env={"O16N_APPSETTINGS": str(path), **NO_THROTTLE, **env},
    )
    server.wait_ready()
    return server


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(18)
    rounds = args.rounds
    figures: dict[str, Any] = {}
    servers: list[Server] = []
    with LdapServer(tmp / "slapd") as slapd, OidcProvider() as idp:
        try:
            ldap_env = {"O16N_LDAP_CA_FILE": str(slapd.ca_file)}
            local_only = serve(tmp, "local", password, {})
            servers.append(local_only)
            cached_doc = slapd.appsettings()
            lookup_doc = slapd.appsettings()
            lookup_doc["Authorization"]["CacheLifeTimeInMinutes"] = "0"
            cached = serve(tmp, "ldap-cached", password, cached_doc, **ldap_env)
            servers.append(cached)
            lookup = serve(tmp, "ldap-lookup", password, lookup_doc, **ldap_env)
            servers.append(lookup)
            aad = serve(tmp, "aad", password, idp.appsettings(owner=[OWNERS]))
            servers.append(aad)

            alice = slapd.users["alice"]
            api = Api(cached.url)
            plain = Api(local_only.url)
            say("logins ...")
            first = timed(1, login_call(api, alice.login, alice.password, 200))
            figures["login_local"] = summary(
                timed(rounds, login_call(plain, "admin", password, 200))
            )
            figures["login_ldap_first"] = summary(first)
            figures["login_ldap"] = summary(
                timed(rounds, login_call(api, alice.login, alice.password, 200))
            )
            wrong, unknown = [], []
            for _ in range(rounds):  # interleaved: drift hits both alike
                wrong += timed(1, login_call(api, alice.login, "not-" + alice.password, 401))
                unknown += timed(1, login_call(api, "nobody-at-all", alice.password, 401))
            figures["login_ldap_wrong_password"] = summary(wrong)
            figures["login_ldap_unknown_user"] = summary(unknown)
            wrong, unknown = [], []
            for _ in range(max(rounds // 4, 5)):
                wrong += timed(1, login_call(plain, "admin", "not-" + password, 401))
                unknown += timed(1, login_call(plain, "nobody-local", password, 401))
            figures["login_local_wrong_password"] = summary(wrong)
            figures["login_local_unknown_user"] = summary(unknown)

            say("requests ...")
            local = Api(local_only.url).login(password)
            ldap_user = Api(cached.url).login(alice.password, alice.login)
            relooked = Api(lookup.url).login(alice.password, alice.login)
            requests = rounds * 5
            figures["request_local"] = summary(
                timed(requests, lambda: expect(local, "GET", "/sessions", 200))
            )
            figures["request_ldap_cached_roles"] = summary(
                timed(requests, lambda: expect(ldap_user, "GET", "/sessions", 200))
            )
            figures["request_ldap_roles_looked_up"] = summary(
                timed(requests, lambda: expect(relooked, "GET", "/sessions", 200))
            )

            one = Api(aad.url)
            warm = idp.token("warm@contoso.example", groups=[OWNERS])
            one.token = warm
            expect(one, "GET", "/sessions", 200)  # the provider's keys, fetched once
            tokens = [idp.token("olga@contoso.example", groups=[OWNERS]) for _ in range(rounds)]
            firsts = []
            for token in tokens:
                one.token = token
                firsts += timed(1, lambda: expect(one, "GET", "/sessions", 200))
            figures["request_oidc_first"] = summary(firsts)
            new_users = [
                idp.token(f"user{i}@contoso.example", groups=[OWNERS]) for i in range(rounds)
            ]
            news = []
            for token in new_users:
                one.token = token
                news += timed(1, lambda: expect(one, "GET", "/sessions", 200))
            figures["request_oidc_new_user"] = summary(news)
            one.token = tokens[0]
            figures["request_oidc_later"] = summary(
                timed(requests, lambda: expect(one, "GET", "/sessions", 200))
            )
            for server in servers:
                server.check_alive()
            return figures
        finally:
            for server in servers:
                server.stop()


ROWS = [
    ("POST /login, local user (argon2)", "login_local"),
    ("POST /login, LDAP user, first", "login_ldap_first"),
    ("POST /login, LDAP user", "login_ldap"),
    ("401: LDAP, wrong password", "login_ldap_wrong_password"),
    ("401: LDAP, unknown user", "login_ldap_unknown_user"),
    ("401: local, wrong password", "login_local_wrong_password"),
    ("401: local, unknown user", "login_local_unknown_user"),
    ("GET /sessions, local token", "request_local"),
    ("  LDAP token, roles cached", "request_ldap_cached_roles"),
    ("  LDAP token, roles looked up", "request_ldap_roles_looked_up"),
    ("  Azure AD token, first use", "request_oidc_first"),
    ("  Azure AD, new user's first", "request_oidc_new_user"),
    ("  Azure AD token, later", "request_oidc_later"),
]


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Ratios against the local baselines into ``figures``; the report."""
    base_login = figures["login_local"]["p50_ms"]
    base_request = figures["request_local"]["p50_ms"]
    lines = [
        f"Sign-in, {args.rounds} logins / {args.rounds * 5} requests per row, p50 and p90 in ms;",
        "ratio: to a local login (logins) or a local token's request (requests), same run",
        f"{'':34}{'p50':>9}{'p90':>9}{'ratio':>9}",
    ]
    ratios = {}
    for label, key in ROWS:
        row = figures[key]
        base = base_request if key.startswith("request") else base_login
        ratios[key] = row["p50_ms"] / base
        lines.append(f"{label:34}{row['p50_ms']:9.2f}{row['p90_ms']:9.2f}{ratios[key]:9.2f}")
    figures["ratios"] = ratios
    ldap_gap = ratios["login_ldap_unknown_user"] / ratios["login_ldap_wrong_password"]
    local_gap = ratios["login_local_unknown_user"] / ratios["login_local_wrong_password"]
    lines.append(
        f"unknown user / wrong password, p50: LDAP {ldap_gap:.2f}, local {local_gap:.2f} "
        f"({'PASS' if 0.8 <= ldap_gap <= 1.25 and 0.8 <= local_gap <= 1.25 else 'MISS'}: "
        "within 0.8-1.25)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="logins per row (40)")
    common_options(parser)
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    return run_bench("login", args, run, report, labels=[LABEL], tools=["slapd"], needs_image=False)


if __name__ == "__main__":
    raise SystemExit(main())
