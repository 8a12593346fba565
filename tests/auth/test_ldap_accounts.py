"""LdapAccounts against a real slapd (tests/ldap_server.py): sign-in, groups, look-ups,
TLS verification, and a directory that is down or does not answer. No Docker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from pydantic import SecretStr

from controller.auth import appsettings
from controller.auth.appsettings import LdapConfig, RoleGroups
from controller.auth.ldap_accounts import DirectoryUnavailable, LdapAccount, LdapAccounts
from controller.roles import Role
from tests.conftest import make_settings
from tests.ldap_server import BASE, GROUPS, LdapServer


@contextlib.asynccontextmanager
async def accounts(config: LdapConfig, **kwargs: Any) -> AsyncIterator[LdapAccounts]:
    directory = LdapAccounts(config, **kwargs)
    try:
        yield directory
    finally:
        await directory.close()


async def sign_in(config: LdapConfig, username: str, password: str) -> LdapAccount | None:
    async with accounts(config) as directory:
        return await directory.authenticate(username, password)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def starttls_then_silent() -> Iterator[int]:
    """A port whose server agrees to StartTLS (resultCode 0) and then never shakes hands."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(5)
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            held.append(conn)
            request = conn.recv(4096)  # 30 len 02 01 <id> 77 ...: the StartTLS request
            message_id = request[4]
            conn.sendall(
                bytes([0x30, 0x0C, 0x02, 0x01, message_id, 0x78, 0x07])
                + bytes([0x0A, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00])
            )
            done.wait(10)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        server.join()
        for conn in held:
            conn.close()
        listener.close()


def group(cn: str) -> set[str]:
    return {cn, f"cn={cn},{GROUPS}"}


# --- signing in ----------------------------------------------------------------------------


async def test_a_user_signs_in_over_starttls_verified_by_the_ca_file(
    ldap_server: LdapServer,
) -> None:
    alice = ldap_server.users["alice"]
    account = await sign_in(ldap_server.config(host="localhost"), "alice", alice.password)
    assert account == LdapAccount(
        unique_id="alice",
        display_name="Alice",
        email="alice@o16n.test",
        groups=frozenset(group("o16n-owners") | group("o16n-contributors")),
        disabled=False,
    )


async def test_a_user_signs_in_over_ldaps_verified_by_the_ca_file(
    ldap_server: LdapServer,
) -> None:
    config = ldap_server.config(ldaps=True)
    assert config.url.startswith("ldaps://127.0.0.1:")  # the certificate's IP address SAN
    account = await sign_in(config, "alice", ldap_server.users["alice"].password)
    assert account is not None and account.unique_id == "alice"


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
@pytest.mark.parametrize("ca", ["other", "system"])
async def test_a_server_certificate_no_trusted_ca_signed_is_refused(
    ldap_server: LdapServer, ldaps: bool, ca: str
) -> None:
    """Another CA's file, or the system's CAs: the directory is unusable, never a login."""
    ca_file = ldap_server.other_ca_file if ca == "other" else None
    config = ldap_server.config(ldaps=ldaps, ca_file=ca_file)
    async with accounts(config) as directory:
        with pytest.raises(DirectoryUnavailable, match=r"(?i)certificate|TLS|connect"):
            await directory.authenticate("alice", ldap_server.users["alice"].password)
        with pytest.raises(DirectoryUnavailable):
            await directory.check()


async def test_a_wrong_password_and_an_unknown_user_are_refused_alike(
    ldap_server: LdapServer,
) -> None:
    """Both None, and both cost the server one bind (the unknown user's with the given
    password as a DN that cannot exist), so neither answer nor work tells them apart."""
    async with accounts(ldap_server.config(), workers=1) as directory:
        await directory.check()
        assert await directory.authenticate("dave", ldap_server.users["dave"].password)
        before = ldap_server.binds()
        assert await directory.authenticate("alice", "not-her-password") is None
        middle = ldap_server.binds()
        assert await directory.authenticate("nobody-at-all", "not-her-password") is None
        after = ldap_server.binds()
    assert middle - before == after - middle == 2  # one of the call's, one of binds()'s


async def test_an_empty_password_is_refused_before_any_bind(ldap_server: LdapServer) -> None:
    """RFC 4513's unauthenticated bind would succeed: no bind, no connection even."""
    before = ldap_server.binds()
    async with accounts(ldap_server.config()) as directory:
        assert await directory.authenticate("alice", "") is None
    assert ldap_server.binds() == before + 1  # binds()'s own
    with silent_port() as port:  # no network use at all: a dead server is not noticed
        assert await sign_in(ldap_server.config(port=port, timeout=0.5), "alice", "") is None


async def test_a_ca_file_gone_after_the_start_makes_the_directory_unavailable(
    ldap_server: LdapServer, tmp_path: Path
) -> None:
    """python-ldap then raises a bare ValueError, which must not reach /login as a 500."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ldap_server.ca_file.read_bytes())
    alice = ldap_server.users["alice"]
    async with accounts(ldap_server.config(ca_file=ca_file)) as directory:
        ca_file.unlink()
        with pytest.raises(DirectoryUnavailable, match="CA"):
            await directory.authenticate("alice", alice.password)


@pytest.mark.parametrize(
    "name", ["", "a" * 1025, "al\ud800ice"], ids=["empty", "long", "surrogate"]
)
async def test_a_name_nobody_can_have_is_refused_without_network_use(
    ldap_server: LdapServer, name: str
) -> None:
    """Empty, longer than any directory's names, or not encodable (a lone surrogate from a
    JSON escape): None at once; the silent port would make any network use a 503."""
    with silent_port() as port:
        async with accounts(ldap_server.config(port=port, timeout=0.5)) as directory:
            assert await directory.authenticate(name, "a-password") is None
            assert await directory.authenticate("alice", "pass\udc80word") is None
            assert await directory.lookup(name) is None


@pytest.mark.parametrize(
    "username", ["*", "alice)(uid=*", "*)(|(uid=*", "ali*", "alice)(|(uid=alice", "\\2a"]
)
async def test_filter_injection_strings_sign_nobody_in(
    ldap_server: LdapServer, username: str
) -> None:
    """Escaped per RFC 4515, each is a literal name nobody has (``ali*`` unescaped would
    find alice alone, and sign her in with her password)."""
    assert (
        await sign_in(ldap_server.config(), username, ldap_server.users["alice"].password) is None
    )


async def test_a_name_with_filter_characters_and_accents_signs_in(
    ldap_server: LdapServer,
) -> None:
    zoe = ldap_server.users["zoe"]
    assert zoe.login == "Zoë (ops)*"
    account = await sign_in(ldap_server.config(), zoe.login, zoe.password)
    assert account is not None
    assert account.unique_id == "Zoë (ops)*"
    assert account.display_name == "Zoë Ørsted"
    assert account.groups == frozenset(group("o16n-readers"))  # a groupOfUniqueNames
    assert await sign_in(ldap_server.config(), zoe.login, "wrong") is None


async def test_a_bind_filter_binds_with_the_name_dn_escaped(ldap_server: LdapServer) -> None:
    config = ldap_server.config(bind_filter=f"uid={{0}},ou=people,{BASE}")
    zoe = ldap_server.users["zoe"]
    account = await sign_in(config, zoe.login, zoe.password)
    assert account is not None and account.unique_id == zoe.login
    # A name that would put the bind in another entry's DN, escaped, binds as nobody.
    alice = ldap_server.users["alice"]
    assert await sign_in(config, "alice,ou=people", alice.password) is None


async def test_a_user_in_two_groups_has_both(ldap_server: LdapServer) -> None:
    account = await sign_in(ldap_server.config(), "alice", ldap_server.users["alice"].password)
    assert account is not None
    assert {"o16n-owners", "o16n-contributors"} <= account.groups
    roles = RoleGroups(
        owner=frozenset({"o16n-owners"}), contributor=frozenset({"o16n-contributors"})
    )
    assert roles.role_for(account.groups) is Role.OWNER


async def test_a_user_in_no_group_has_none(ldap_server: LdapServer) -> None:
    account = await sign_in(ldap_server.config(), "dave", ldap_server.users["dave"].password)
    assert account is not None and account.groups == frozenset()


async def test_an_active_directory_user_gets_groups_from_member_of(
    ldap_server: LdapServer,
) -> None:
    """Found by sAMAccountName; o16n-readers lists no bob: only his memberOf says so."""
    config = ldap_server.config(search_filter="(sAMAccountName={0})")
    bob = ldap_server.users["bob"]
    account = await sign_in(config, "bob", bob.password)
    assert account is not None and not account.disabled
    assert account.groups == frozenset(group("o16n-readers"))


async def test_a_disabled_active_directory_account_is_returned_disabled(
    ldap_server: LdapServer,
) -> None:
    """userAccountControl 514 (ACCOUNTDISABLE) where the directory still lets it bind:
    the caller refuses it as a wrong password and ends its tokens."""
    carol = ldap_server.users["carol"]
    config = ldap_server.config(search_filter="(sAMAccountName={0})")
    account = await sign_in(config, "carol", carol.password)
    assert account is not None and account.disabled
    assert account.unique_id == "carol"


async def test_a_disabled_account_with_a_wrong_password_is_refused_as_anyone_is(
    ldap_server: LdapServer,
) -> None:
    """Not read further (no group search) nor returned: else its refusal would take
    longer than a wrong password's, telling a disabled account's name, and anyone could
    make the caller end its tokens and reload every user, request after request."""
    config = ldap_server.config(search_filter="(sAMAccountName={0})")
    assert await sign_in(config, "carol", "wrong-" + ldap_server.users["carol"].password) is None


@pytest.mark.parametrize(
    ("expires", "disabled"),
    [
        ("past", True),  # (AD refuses its bind; its o16n tokens end at the next lookup)
        ("future", False),
        ("0", False),  # AD's "never"
        ("9223372036854775807", False),  # AD's "never" too
    ],
)
async def test_an_active_directory_account_past_its_expiry_is_disabled(
    ldap_server: LdapServer, expires: str, disabled: bool
) -> None:
    """accountExpires: 100-ns intervals since 1601 (AD's FILETIME)."""
    filetime = {"past": time.time() - 60, "future": time.time() + 86400}
    value = str(int((filetime[expires] + 11644473600) * 10**7)) if expires in filetime else expires
    bob = ldap_server.users["bob"]
    conn = ldap.initialize(ldap_server.ldap_url)
    conn.simple_bind_s(ldap_server.admin_dn, ldap_server.admin_password)
    conn.modify_s(bob.dn, [(ldap.MOD_REPLACE, "accountExpires", [value.encode()])])
    try:
        async with accounts(ldap_server.config()) as directory:
            account = await directory.lookup("bob")
        assert account is not None and account.disabled is disabled
    finally:
        conn.modify_s(bob.dn, [(ldap.MOD_DELETE, "accountExpires", None)])
        conn.unbind_s()


async def test_an_account_locked_by_ppolicy_is_disabled(ldap_server: LdapServer) -> None:
    account = await sign_in(ldap_server.config(), "erin", ldap_server.users["erin"].password)
    assert account is not None and account.disabled


async def test_a_name_matching_two_entries_signs_nobody_in(ldap_server: LdapServer) -> None:
    twin = ldap_server.users["twin"]
    assert ldap_server.users["twin2"].login == twin.login
    assert await sign_in(ldap_server.config(), "twin", twin.password) is None


async def test_an_entry_without_the_unique_id_attribute_is_not_an_account(
    ldap_server: LdapServer,
) -> None:
    config = ldap_server.config(unique_id_attribute="employeeNumber")
    assert await sign_in(config, "alice", ldap_server.users["alice"].password) is None


# --- look-ups and checks -------------------------------------------------------------------


async def test_lookup_finds_a_present_user_and_not_an_absent_one(
    ldap_server: LdapServer,
) -> None:
    async with accounts(ldap_server.config()) as directory:
        alice = await directory.lookup("alice")
        assert alice is not None and alice.groups >= group("o16n-owners")
        zoe = await directory.lookup("Zoë (ops)*")
        assert zoe is not None and zoe.display_name == "Zoë Ørsted"
        assert await directory.lookup("nobody") is None
        assert await directory.lookup("ali*") is None
        assert await directory.lookup("twin") is None  # ambiguous
        carol = await directory.lookup("carol")
        assert carol is not None and carol.disabled


async def test_check_binds_as_the_query_user(ldap_server: LdapServer) -> None:
    async with accounts(ldap_server.config()) as directory:
        await directory.check()
    wrong = ldap_server.config(query_user_password=SecretStr("not-the-query-password"))
    async with accounts(wrong) as directory:
        with pytest.raises(DirectoryUnavailable, match="query user") as caught:
            await directory.check()
        with pytest.raises(DirectoryUnavailable):
            await directory.authenticate("alice", ldap_server.users["alice"].password)
    assert "not-the-query-password" not in str(caught.value)


# --- a directory down, or silent ------------------------------------------------------------


async def test_a_stopped_server_is_unavailable_at_once(ldap_server: LdapServer) -> None:
    config = ldap_server.config(timeout=1.0)
    alice = ldap_server.users["alice"]
    async with accounts(config) as directory:
        with ldap_server.stopped():
            started = time.monotonic()
            with pytest.raises(DirectoryUnavailable):
                await directory.authenticate("alice", alice.password)
            with pytest.raises(DirectoryUnavailable):
                await directory.lookup("alice")
            with pytest.raises(DirectoryUnavailable):
                await directory.check()
            assert time.monotonic() - started < 3
        assert await directory.authenticate("alice", alice.password) is not None


async def test_a_connection_the_server_dropped_is_dialled_again(ldap_server: LdapServer) -> None:
    """The worker's query-user connection dies with a restart; the next call re-dials."""
    alice = ldap_server.users["alice"]
    async with accounts(ldap_server.config(), workers=1) as directory:
        assert await directory.authenticate("alice", alice.password) is not None
        with ldap_server.stopped():
            pass
        assert await directory.authenticate("alice", alice.password) is not None


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
async def test_a_server_that_never_answers_is_unavailable_within_the_timeout(
    ldap_server: LdapServer, ldaps: bool
) -> None:
    """Connected but silent: libldap's timeouts hold, and the event loop keeps running
    (a blocking call would stall it for the whole 0.5 s wait)."""
    ticks = [time.monotonic()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    ticker = asyncio.create_task(tick())
    with silent_port() as port:
        config = ldap_server.config(port=port, ldaps=ldaps, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            await sign_in(config, "alice", ldap_server.users["alice"].password)
        elapsed = time.monotonic() - started
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert 0.4 < elapsed < 2.5
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.4


async def test_a_server_that_goes_silent_mid_session_is_unavailable_within_the_timeout(
    ldap_server: LdapServer,
) -> None:
    """The worker's bound connection waits for a search answer that never comes."""
    alice = ldap_server.users["alice"]
    async with accounts(ldap_server.config(timeout=0.5), workers=1) as directory:
        assert await directory.authenticate("alice", alice.password) is not None
        with ldap_server.paused():
            started = time.monotonic()
            with pytest.raises(DirectoryUnavailable, match=r"(?i)time"):
                await directory.lookup("alice")
            with pytest.raises(DirectoryUnavailable):
                await directory.check()
            elapsed = time.monotonic() - started
        # bounded, not hanging: two calls, each within its backstop (4 x timeout + 1 s);
        # a busy machine stretches the 0.5 s timeouts themselves
        assert elapsed < 2 * (4 * 0.5 + 1)
        assert await directory.authenticate("alice", alice.password) is not None


async def test_a_server_that_never_finishes_the_starttls_handshake_is_unavailable(
    ldap_server: LdapServer,
) -> None:
    """libldap 2.5 shakes hands on a blocking socket unless connecting asynchronously:
    without that, this call (and its worker) would wait for good."""
    with starttls_then_silent() as port:
        config = ldap_server.config(port=port, timeout=0.5)
        started = time.monotonic()
        async with accounts(config) as directory:
            with pytest.raises(DirectoryUnavailable):
                await directory.check()
        assert time.monotonic() - started < 4 * 0.5 + 1 + 1  # the backstop, and the close


async def test_no_password_reaches_the_log(
    ldap_server: LdapServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, through a sign-in, a refusal and a refused query user: no password."""
    caplog.set_level("DEBUG")
    alice = ldap_server.users["alice"]
    async with accounts(ldap_server.config()) as directory:
        assert await directory.authenticate("alice", alice.password) is not None
        assert await directory.authenticate("alice", alice.password + "x") is None
        assert await directory.authenticate("nobody", alice.password) is None
    wrong = ldap_server.config(query_user_password=SecretStr("query-secret-" + alice.password))
    async with accounts(wrong) as directory:
        with pytest.raises(DirectoryUnavailable) as caught:
            await directory.authenticate("alice", alice.password)
    logged = caplog.text + str(caught.value)
    assert alice.password not in logged and ldap_server.query_password not in logged


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
async def test_the_fixtures_appsettings_read_as_ml_servers_and_sign_in(
    ldap_server: LdapServer, ldaps: bool, tmp_path: Path
) -> None:
    """What the end-to-end tests give the server: ML Server's sections, value forms and
    all, with the CA file in O16N_LDAP_CA_FILE, is the config these tests use."""
    settings = make_settings(tmp_path, ldap_ca_file=ldap_server.ca_file, ldap_timeout=2.0)
    directory = appsettings.parse(ldap_server.appsettings(ldaps=ldaps), settings)
    assert directory.ldap == ldap_server.config(ldaps=ldaps)
    assert directory.roles.owner == {"o16n-owners"}
    bob = ldap_server.users["bob"]
    account = await sign_in(directory.ldap, bob.login, bob.password)
    assert account is not None and directory.roles.role_for(account.groups) is Role.READER
