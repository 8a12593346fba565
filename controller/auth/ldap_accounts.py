"""Active Directory / LDAP accounts: ML Server's search-then-bind sign-in, and look-ups.

``authenticate`` binds as the query user, searches ``SearchBase`` with ``SearchFilter``
(the user name escaped per RFC 4515), requires exactly one entry, then binds as it (or as
``BindFilter``, the user name escaped per RFC 4514) with the given password, on a
connection of its own. An empty password is refused before any network use: RFC 4513's
unauthenticated bind would succeed with any DN. An unknown or ambiguous name still makes
the same round trips, binding with the given password as a DN that cannot exist, so the
time of a refusal does not tell whether the user exists.

python-ldap (libldap) blocks, so every call to it runs in this class's own thread pool,
never on the event loop. libldap bounds each step (``OPT_NETWORK_TIMEOUT`` the connect
and, with ``OPT_CONNECT_ASYNC``, the TLS handshake; ``OPT_TIMEOUT`` each operation); a
deadline around each call is the backstop for anything it does not bound. Each worker
keeps its query-user connection (re-dialled once when the server dropped it); a user's
bind is always on a fresh one.

Failures of the directory (unreachable, TLS, timeouts, the query user refused, busy)
are ``DirectoryUnavailable``, whose message is for the operator's log only; no ldap
exception leaves this module. Passwords are never logged; DNs at debug at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap
import ldap.dn
import ldap.filter

from controller.auth.appsettings import LdapConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Active Directory's userAccountControl flag of a disabled account.
_ACCOUNTDISABLE = 0x2
#: Active Directory's accountExpires (100-ns intervals since 1601): values meaning never,
#: and 1970-01-01 in that count
_NEVER_EXPIRES = frozenset({0, 0x7FFFFFFFFFFFFFFF})
_FILETIME_OF_EPOCH = 116_444_736_000_000_000
#: At most this many groups are read for one user (a bound on one search's answer).
MAX_GROUPS = 1000
#: Longer user names are nobody's (AD's userPrincipalName, the longest, stops at 1024).
MAX_NAME = 1024
#: The user's bind failed for a reason that is the user's, not the directory's.
_BIND_REFUSED: tuple[type[Exception], ...] = (
    ldap.INVALID_CREDENTIALS,
    ldap.INVALID_DN_SYNTAX,
    ldap.UNWILLING_TO_PERFORM,
    ldap.INAPPROPRIATE_AUTH,
    ldap.CONSTRAINT_VIOLATION,
)
_Entry = tuple[str, dict[str, list[bytes]]]


class DirectoryUnavailable(Exception):
    """The directory could not be reached or used (connect/TLS failure, timeout, query-user
    bind refused, server busy). Its message is for the operator's log only, never a client."""


@dataclass(frozen=True, slots=True)
class LdapAccount:
    #: value of ``config.unique_id_attribute`` (an entry without it is not a usable account)
    unique_id: str
    display_name: str | None
    email: str | None
    #: casefolded: for each group the user is in, its CN and its full DN
    groups: frozenset[str]
    #: Active Directory's userAccountControl has ACCOUNTDISABLE (0x2) or its
    #: accountExpires has passed, or OpenLDAP's ppolicy locked the account
    #: (pwdAccountLockedTime)
    disabled: bool


class LdapAccounts:
    """Sign-in and look-ups against one LDAP directory (``LdapConfig``)."""

    def __init__(self, config: LdapConfig, *, workers: int = 4) -> None:
        self._config = config
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="o16n-ldap")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._query_connections: set[Any] = set()  # every worker's, unbound by ``close``
        self._closed = False
        # Each call makes a handful of steps, each bounded by libldap; this bounds them all.
        self._deadline = 4 * config.timeout + 1.0
        self._attributes = sorted(
            {
                config.unique_id_attribute,
                *(a for a in (config.display_name_attribute, config.email_attribute) if a),
                "memberOf",
                "userAccountControl",
                "accountExpires",
                "pwdAccountLockedTime",
            },
            key=str.casefold,
        )
        self._group_base = _domain_of(config.search_base)

    # --- the interface -----------------------------------------------------------------

    async def authenticate(self, username: str, password: str) -> LdapAccount | None:
        """The account ``username`` signs in to with ``password``, or ``None`` (unknown,
        ambiguous, wrong password, no unique id). A disabled account whose bind the
        directory still accepts (OpenLDAP does not read AD's flags) is returned as such:
        the caller refuses it as it would a wrong password, and may end its tokens."""
        if not password:  # RFC 4513 5.1.2: an unauthenticated bind would "succeed"
            return None
        if not username or len(username) > MAX_NAME:
            return None
        if not (_utf8(username) and _utf8(password)):  # lone surrogates from JSON escapes
            return None
        return await self._run(self._authenticate, username, password)

    async def lookup(self, unique_id: str) -> LdapAccount | None:
        """The account whose unique id is ``unique_id`` now (its groups, whether it is
        disabled), or ``None`` when it is gone or no longer unique."""
        if not unique_id or len(unique_id) > MAX_NAME or not _utf8(unique_id):
            return None
        return await self._run(self._lookup, unique_id)

    async def check(self) -> None:
        """Connect and bind as the query user, on a fresh connection (for ``/status``);
        ``DirectoryUnavailable`` saying why not."""
        await self._run(self._check)

    async def close(self) -> None:
        """Stop the workers (waiting for calls under way) and unbind their connections."""
        self._closed = True
        await asyncio.to_thread(self._shut_down)

    def _shut_down(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            connections, self._query_connections = self._query_connections, set()
        for conn in connections:
            _unbind(conn)

    # --- running blocking calls --------------------------------------------------------

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise DirectoryUnavailable("the LDAP client is closed")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool, call, *args)
        except RuntimeError:  # the pool was shut down meanwhile
            raise DirectoryUnavailable("the LDAP client is closed") from None
        try:
            return await asyncio.wait_for(future, self._deadline)
        except TimeoutError:
            raise DirectoryUnavailable(
                f"LDAP {self._config.url}: no answer within {self._deadline:g} s"
            ) from None

    # --- in a worker thread ------------------------------------------------------------

    def _authenticate(self, username: str, password: str) -> LdapAccount | None:
        config = self._config
        escaped = ldap.filter.escape_filter_chars(username)
        entry = self._single(config.search_filter.replace("{0}", escaped))
        if entry is None:
            self._user_bind(self._absent_dn(), password)  # the same round trips as a user's
            return None
        dn, attributes = entry
        if config.bind_filter:
            bind_dn = config.bind_filter.replace("{0}", ldap.dn.escape_dn_chars(username))
        else:
            bind_dn = dn
        if not self._user_bind(bind_dn, password):
            # (a disabled account's too: no groups read, a wrong password costs what an
            # unknown user does; its tokens end at the next role lookup)
            return None
        account = self._account(dn, attributes)
        if account is None:
            return None
        log.debug("LDAP: %s signed in%s", dn, " (disabled)" if account.disabled else "")
        return account

    def _lookup(self, unique_id: str) -> LdapAccount | None:
        attribute = self._config.unique_id_attribute
        entry = self._single(ldap.filter.filter_format(f"({attribute}=%s)", [unique_id]))
        return None if entry is None else self._account(*entry)

    def _single(self, filterstr: str) -> _Entry | None:
        """The one entry under the search base that ``filterstr`` matches, if exactly one."""
        config = self._config
        entries, more = self._query(
            lambda conn: _search(
                conn, config.search_base, filterstr, self._attributes, 2, config.timeout
            )
        )
        if more or len(entries) != 1:
            log.debug("LDAP: %d entries (or more) match a user's filter", len(entries))
            return None
        return entries[0]

    def _check(self) -> None:
        conn = self._dial()
        try:
            self._bind_query_user(conn)
        finally:
            _unbind(conn)

    def _account(self, dn: str, attributes: Mapping[str, list[bytes]]) -> LdapAccount | None:
        """The account of the entry at ``dn``, with its groups; ``None`` without a unique id."""
        config = self._config
        values = {name.casefold(): vals for name, vals in attributes.items()}
        unique_id = _text(values, config.unique_id_attribute)
        if not unique_id:
            log.debug("LDAP: %s has no %s; not a usable account", dn, config.unique_id_attribute)
            return None
        groups: set[str] = set()
        for group_dn in _texts(values, "memberOf"):
            groups.update(_group_names(group_dn, None))
        member_filter = ldap.filter.filter_format("(|(member=%s)(uniqueMember=%s))", [dn, dn])
        found, more = self._query(
            lambda conn: _search(
                conn, self._group_base, member_filter, ["cn"], MAX_GROUPS, config.timeout
            )
        )
        if more:
            log.warning("LDAP: %s is in more than %d groups; read %d", dn, MAX_GROUPS, len(found))
        for group_dn, group_attributes in found:
            cns = _texts({k.casefold(): v for k, v in group_attributes.items()}, "cn")
            groups.update(_group_names(group_dn, cns))
        return LdapAccount(
            unique_id=unique_id,
            display_name=_text(values, config.display_name_attribute),
            email=_text(values, config.email_attribute),
            groups=frozenset(groups),
            disabled=_disabled(attributes),
        )

    def _absent_dn(self) -> str:
        return f"cn=o16n-absent-{secrets.token_hex(16)},{self._config.search_base}"

    def _user_bind(self, dn: str, password: str) -> bool:
        """Whether ``dn`` binds with ``password``, on a fresh connection then unbound."""
        conn = self._dial()
        try:
            conn.simple_bind_s(dn, password)
        except _BIND_REFUSED:
            return False
        except ldap.LDAPError as exc:
            raise self._unavailable("the user's bind", exc) from None
        finally:
            _unbind(conn)
        return True

    def _query(self, operation: Callable[[Any], T]) -> T:
        """``operation`` on this worker's query-user connection, dialled and bound when
        there is none; once more on a fresh one when the server had dropped it."""
        conn = getattr(self._local, "conn", None)
        for attempt in (0, 1):
            reused = conn is not None
            if conn is None:
                conn = self._dial()
                try:
                    self._bind_query_user(conn)
                except BaseException:
                    _unbind(conn)
                    raise
                self._local.conn = conn
                with self._lock:
                    self._query_connections.add(conn)
            try:
                return operation(conn)
            except ldap.LDAPError as exc:
                self._forget(conn)
                conn = None
                if attempt == 0 and reused and isinstance(exc, ldap.SERVER_DOWN):
                    continue  # an idle connection the server (or a restart) closed
                raise self._unavailable("a search", exc) from None
        raise AssertionError("unreachable")

    def _forget(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            self._query_connections.discard(conn)
        _unbind(conn)

    def _dial(self) -> Any:
        """A new connection with this module's options, TLS started when configured; it
        connects (and for ldaps:// shakes hands) at its first operation."""
        config = self._config
        try:
            conn = ldap.initialize(config.url)
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, config.timeout)
            conn.set_option(ldap.OPT_TIMEOUT, config.timeout)
            # Without it libldap 2.5 shakes hands (ldaps:// or StartTLS) on a blocking
            # socket, with no timeout: a server that accepts and never answers would hold
            # a worker for good. The price: libldap then tries only the first address a
            # host name resolves to (Host should name one server, or a load balancer).
            conn.set_option(ldap.OPT_CONNECT_ASYNC, 1)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            if config.ca_file is not None:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(config.ca_file))
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # this connection's TLS context
        except ldap.LDAPError as exc:
            raise self._unavailable("setting up a connection", exc) from None
        except ValueError:  # python-ldap's "option error": the CA file went unreadable
            raise DirectoryUnavailable(
                f"LDAP {config.url}: TLS could not be set up: can the CA certificates in "
                f"{config.ca_file} still be read?"
            ) from None
        if config.start_tls and not config.use_ldaps:
            try:
                conn.start_tls_s()
            except ldap.LDAPError as exc:
                _unbind(conn)
                raise self._unavailable("StartTLS", exc) from None
        return conn

    def _bind_query_user(self, conn: Any) -> None:
        config = self._config
        try:
            conn.simple_bind_s(config.query_user_dn, config.query_user_password.get_secret_value())
        except ldap.LDAPError as exc:
            raise self._unavailable("the query user's bind", exc) from None

    def _unavailable(self, doing: str, exc: ldap.LDAPError) -> DirectoryUnavailable:
        message = f"LDAP {self._config.url}: {doing} failed: {_describe(exc)}"
        if (doing == "StartTLS" or self._config.use_ldaps) and _tls_failure(exc):
            # libldap does not say why a handshake failed: name what usually does it.
            ca = self._config.ca_file or "the system's CA certificates"
            message += (
                f" (TLS: is the server's certificate signed by a CA in {ca}, and does it "
                f"name {self._config.host}?)"
            )
        return DirectoryUnavailable(message)


# --- helpers -------------------------------------------------------------------------------


def matching_name(username: str) -> str:
    """``username`` as directories compare names (RFC 4518: compatibility forms folded,
    case ignored, leading, trailing and repeated spaces insignificant), so that " alice",
    "ALICE " and full-width letters, which all find alice, count as one name where
    failed logins are counted."""
    return " ".join(unicodedata.normalize("NFKC", username).casefold().split())


def _search(
    conn: Any, base: str, filterstr: str, attributes: list[str], limit: int, timeout: float
) -> tuple[list[_Entry], bool]:
    """The entries (not references) of a subtree search, at most ``limit``, and whether
    there were more."""
    msgid = conn.search_ext(
        base, ldap.SCOPE_SUBTREE, filterstr, attributes, sizelimit=limit, timeout=timeout
    )
    entries: list[_Entry] = []
    try:
        while True:
            kind, data, _, _ = conn.result3(msgid, all=0)
            entries.extend((dn, attrs) for dn, attrs in data or () if dn is not None)
            if kind == ldap.RES_SEARCH_RESULT:
                return entries, False
    except ldap.SIZELIMIT_EXCEEDED:
        return entries, True


def _disabled(attributes: Mapping[str, list[bytes]]) -> bool:
    """Whether Active Directory disabled the account or it expired there (AD refuses its
    binds then, but the tokens o16n issued it would live on), or OpenLDAP's ppolicy
    locked it."""
    values = {name.casefold(): vals for name, vals in attributes.items()}
    if _texts(values, "pwdAccountLockedTime"):
        return True
    expires = _text(values, "accountExpires")
    if expires is not None and expires.isascii() and expires.isdigit():
        filetime = int(expires)
        now = _FILETIME_OF_EPOCH + int(time.time() * 10_000_000)
        if filetime not in _NEVER_EXPIRES and filetime <= now:
            return True
    control = _text(values, "userAccountControl")
    return (
        control is not None
        and control.lstrip("-").isdigit()
        and bool(int(control) & _ACCOUNTDISABLE)
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(values: Mapping[str, list[bytes]], attribute: str | None) -> str | None:
    """The first value of ``attribute`` as text (``None``: absent, empty or not UTF-8)."""
    if attribute is None:
        return None
    found = _texts(values, attribute)
    return found[0] if found else None


def _texts(values: Mapping[str, list[bytes]], attribute: str) -> list[str]:
    texts = []
    for raw in values.get(attribute.casefold(), ()):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if text:
            texts.append(text)
    return texts


def _group_names(dn: str, cns: Iterable[str] | None) -> set[str]:
    """A group's names as roles name them, casefolded: its DN and its CN (from the entry,
    or the DN's first RDN)."""
    names = {dn.casefold()}
    if cns:
        names.update(cn.casefold() for cn in cns)
    try:
        rdns = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        return names
    if rdns:
        names.update(value.casefold() for attr, value, _ in rdns[0] if attr.casefold() == "cn")
    return names


def _domain_of(search_base: str) -> str:
    """Where groups are searched: the domain of ``search_base`` (its trailing ``dc=``
    RDNs), since groups seldom live under the users' container; else the base itself."""
    try:
        rdns = ldap.dn.str2dn(search_base)
    except ldap.DECODING_ERROR:
        return search_base
    tail: list[Any] = []
    for rdn in reversed(rdns):
        if len(rdn) != 1 or rdn[0][0].casefold() != "dc":
            break
        tail.insert(0, rdn)
    return ldap.dn.dn2str(tail) if tail else search_base


def _tls_failure(exc: ldap.LDAPError) -> bool:
    """Whether a connection failed after TCP connected (in the TLS handshake)."""
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    socket_errors = {
        errno.ECONNREFUSED,
        errno.ENOTCONN,  # an async connect refused, as the handshake finds it
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
    return (
        isinstance(exc, ldap.SERVER_DOWN | ldap.CONNECT_ERROR)
        and detail.get("errno") not in socket_errors
    )


def _describe(exc: ldap.LDAPError) -> str:
    """libldap's words for ``exc`` (its description and diagnostic), for the operator."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        parts = [str(detail.get("desc", type(exc).__name__))]
        if detail.get("info"):
            parts.append(str(detail["info"]))
        return ": ".join(parts)
    return f"{type(exc).__name__}: {exc}"


def _unbind(conn: Any) -> None:
    with contextlib.suppress(ldap.LDAPError):
        conn.unbind_s()
