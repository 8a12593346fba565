"""A real OpenLDAP ``slapd`` (Debian's package) that the tests start and stop themselves.

``LdapServer`` makes, in a directory of its own: a CA and a server certificate for
``127.0.0.1``, ``localhost`` and this machine's names (``cryptography``), a second CA
that did not sign it (for "wrong CA" tests), a ``slapd.conf`` (mdb, Debian's
core/cosine/nis/inetorgperson schemas, a small Active Directory-like schema of its own,
ppolicy, the monitor database), and the directory's data, loaded with ``slapadd``. It
runs ``slapd -d 0`` as a child process on two free ports, ``ldap://`` (StartTLS offered)
and ``ldaps://``, and stops exactly that process (SIGTERM, then SIGKILL) on ``stop`` or
exit, whatever the test did. It can be stopped and started again (``stopped()``),
keeping its ports and data.

Use (``tests/auth/conftest.py`` has the session fixture ``ldap_server``)::

    with LdapServer(tmp_dir) as server:
        server.users["alice"].login, server.users["alice"].password
        server.config(ldaps=True)            # an LdapConfig for it (tests of the module)
        server.appsettings(ldaps=False)      # ML Server's Authentication/Authorization
        server.binds()                       # binds it has received (cn=Monitor)
        with server.stopped(): ...           # unreachable, then back
        with server.paused(): ...            # frozen (SIGSTOP): silent, then back

The directory (``BASE`` = ``dc=o16n,dc=test``): people under ``ou=people``, groups under
``ou=groups``, the query user under ``ou=service``; the people are in ``_users()``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import ldap
import ldif
from pydantic import SecretStr

from controller.auth.appsettings import LdapConfig
from tests.tls_certs import make_ca, server_certificate

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE = "dc=o16n,dc=test"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
QUERY_DN = f"cn=query,ou=service,{BASE}"
ADMIN_DN = f"cn=admin,{BASE}"
#: The filter of ``config``/``appsettings`` unless told: OpenLDAP's ``uid`` or AD's name.
SEARCH_FILTER = "(|(uid={0})(sAMAccountName={0}))"


def available() -> str | None:
    """Why this machine cannot run the server (``None``: it can)."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (scripts/ensure-ldap.sh installs slapd as root)"
    if not (MODULE_DIR / "back_mdb.so").exists():
        return f"{MODULE_DIR}/back_mdb.so is missing (Debian's slapd package has it)"
    return None


@dataclass(frozen=True, slots=True)
class LdapUser:
    """A person in the test directory."""

    #: what they type as their user name (their ``uid``; AD-style ones also have it as
    #: ``sAMAccountName``)
    login: str
    #: the entry's DN
    dn: str
    password: str
    #: CNs of the groups they are in (groupOfNames ``member``, or AD ``memberOf``)
    groups: frozenset[str] = frozenset()
    #: AD ``userAccountControl`` (512 enabled, 514 disabled); ``None``: not AD-style
    account_control: int | None = None
    #: ppolicy's ``pwdAccountLockedTime`` is set
    locked: bool = False
    display_name: str = ""
    email: str = ""
    #: extra attributes of the entry
    extra: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def unique_id(self) -> str:
        """Its ``uid``: the unique id of ``config``/``appsettings``."""
        return self.login


def _users() -> dict[str, LdapUser]:
    def user(key: str, login: str, *, ou: str = PEOPLE, **kw: Any) -> tuple[str, LdapUser]:
        name = kw.pop("display_name", login.title())
        return key, LdapUser(
            login=login,
            dn=ldap.dn.dn2str([[("uid", login, ldap.AVA_STRING)]]) + f",{ou}",
            password=f"{key}-" + secrets.token_urlsafe(12),
            display_name=name,
            email=f"{key}@o16n.test",
            **kw,
        )

    return dict(
        [
            # In two groups (groupOfNames).
            user("alice", "alice", groups=frozenset({"o16n-owners", "o16n-contributors"})),
            # Active Directory-style: found by sAMAccountName, groups from memberOf only.
            user("bob", "bob", account_control=512, groups=frozenset({"o16n-readers"})),
            # Active Directory-style and disabled (ACCOUNTDISABLE).
            user("carol", "carol", account_control=514, groups=frozenset({"o16n-contributors"})),
            # Locked by ppolicy (pwdAccountLockedTime).
            user("erin", "erin", locked=True, groups=frozenset({"o16n-contributors"})),
            # A name with filter metacharacters and non-ASCII letters.
            user(
                "zoe",
                "Zoë (ops)*",
                display_name="Zoë Ørsted",
                groups=frozenset({"o16n-readers"}),
            ),
            # In no group.
            user("dave", "dave"),
            # Two entries with the same uid: any search for "twin" is ambiguous.
            user("twin", "twin", groups=frozenset({"o16n-owners"})),
            user("twin2", "twin", ou=f"ou=contractors,{PEOPLE}"),
        ]
    )


#: The groups (under ``ou=groups``): groupOfNames listing their members, except
#: ``o16n-readers``, a groupOfUniqueNames listing zoe only (bob is in it by his AD memberOf).
GROUP_NAMES = ("o16n-owners", "o16n-contributors", "o16n-readers")

AD_SCHEMA = """\
# Active Directory's attributes o16n reads, with AD's OIDs, and an auxiliary class that
# lets an inetOrgPerson carry them (the test directory's "AD-style" users).
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
    EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
    EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.2.840.113556.1.4.159 NAME 'accountExpires'
    EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.100.1 NAME 'o16nAdAccount' AUXILIARY
    MAY ( sAMAccountName $ userPrincipalName $ userAccountControl $ memberOf $
    accountExpires ) )
"""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nobody listens on now on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class LdapServer:
    """One ``slapd`` of the tests' own; see the module's docstring."""

    host = "127.0.0.1"
    base = BASE
    people = PEOPLE
    groups_base = GROUPS
    query_dn = QUERY_DN
    admin_dn = ADMIN_DN

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port, self.ldaps_port = free_ports(2)
        self.query_password = "query-" + secrets.token_urlsafe(12)
        self.admin_password = "admin-" + secrets.token_urlsafe(12)
        self.users = _users()
        self.ca_file = Path()
        #: a CA that did not sign the server's certificate
        self.other_ca_file = Path()
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # --- what tests use ----------------------------------------------------------------

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self, *, ldaps: bool = False, **overrides: Any) -> LdapConfig:
        """An ``LdapConfig`` for this server: LDAPS, or ldap:// with StartTLS; the CA file
        of the fixture; ``uid`` as the unique id, ``cn`` and ``mail``; 2 s timeouts.
        ``overrides`` replace any field (``host="localhost"``, ``ca_file=None``...)."""
        fields: dict[str, Any] = {
            "host": self.host,
            "port": self.ldaps_port if ldaps else self.port,
            "use_ldaps": ldaps,
            "start_tls": not ldaps,
            "bind_filter": None,
            "query_user_dn": self.query_dn,
            "query_user_password": SecretStr(self.query_password),
            "search_base": self.people,
            "search_filter": SEARCH_FILTER,
            "unique_id_attribute": "uid",
            "display_name_attribute": "cn",
            "email_attribute": "mail",
            "ca_file": self.ca_file,
            "timeout": 2.0,
        }
        fields.update(overrides)
        return LdapConfig(**fields)

    def appsettings(self, *, ldaps: bool = False, roles: bool = True) -> dict[str, Any]:
        """ML Server's ``Authentication`` and ``Authorization`` sections for this server,
        with values as its files write them (``"True"``, ``"636"``). The CA file is not an
        ML Server setting: give ``O16N_LDAP_CA_FILE=<ca_file>`` (StartTLS is o16n's
        default for ldap://). ``roles``: map the three groups to the three roles."""
        settings: dict[str, Any] = {
            "Authentication": {
                "LDAP": {
                    "Enabled": "True",
                    "Host": self.host,
                    "Port": str(self.ldaps_port if ldaps else self.port),
                    "UseLDAPS": "True" if ldaps else "False",
                    "BindFilter": "",
                    "QueryUserDn": self.query_dn,
                    "QueryUserPassword": self.query_password,
                    "QueryUserPasswordEncrypted": "False",
                    "SearchBase": self.people,
                    "SearchFilter": SEARCH_FILTER,
                    "UniqueUserIdentifierAttributeName": "uid",
                    "DisplayNameAttributeName": "cn",
                    "EmailAttributeName": "mail",
                },
                "AzureActiveDirectory": {"Enabled": "False"},
            },
            "Authorization": {"CacheLifeTimeInMinutes": "60"},
        }
        if roles:
            settings["Authorization"].update(
                Owner="o16n-owners", Contributor="o16n-contributors", Reader="o16n-readers"
            )
        return settings

    def binds(self) -> int:
        """How many binds the server has received since it started (``cn=Monitor``),
        counting the one this call makes. (Initiated, not completed: slapd counts a bind
        completed only after answering it, so a client could ask before it does.)"""
        conn = ldap.initialize(self.ldap_url)
        try:
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
            conn.simple_bind_s(self.admin_dn, self.admin_password)
            [(_, attrs)] = conn.search_s(
                "cn=Bind,cn=Operations,cn=Monitor",
                ldap.SCOPE_BASE,
                "(objectClass=*)",
                ["monitorOpInitiated"],
            )
            return int(attrs["monitorOpInitiated"][0])
        finally:
            conn.unbind_s()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server stopped (its ports refuse connections), started again after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server frozen (SIGSTOP): connections are accepted by the kernel and never
        answered, open ones go silent; it resumes (SIGCONT) after."""
        process = self._process
        assert process is not None and process.poll() is None, "the server is not running"
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    # --- life cycle --------------------------------------------------------------------

    def __enter__(self) -> LdapServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start ``slapd`` (preparing its files and data the first time) and wait until it
        answers; ``RuntimeError`` with its output if it does not."""
        if self.running:
            return
        if not self._prepared:
            self._prepare()
        out = self.directory / "slapd.out"
        with out.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    SLAPD,
                    "-d",
                    "0",
                    "-h",
                    f"{self.ldap_url}/ {self.ldaps_url}/",
                    "-f",
                    str(self.directory / "slapd.conf"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # (only from the main thread: the signal comes when the forking thread ends)
                preexec_fn=_die_with_parent if threading.current_thread() is _MAIN else None,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + 15
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"slapd exited ({self._process.returncode}): {out.read_text()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not answer within 15 s: {out.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the ``slapd`` this object started (and only it): SIGTERM, then SIGKILL."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused one could not act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _answers(self) -> bool:
        conn = ldap.initialize(self.ldap_url)
        try:
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
            conn.set_option(ldap.OPT_TIMEOUT, 1.0)
            conn.simple_bind_s(self.query_dn, self.query_password)
        except ldap.LDAPError:
            return False
        finally:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((self.host, self.ldaps_port)) == 0

    # --- files -------------------------------------------------------------------------

    def _prepare(self) -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "db").mkdir(exist_ok=True)
        self.ca_file, ca_key, ca_cert = make_ca(d, "o16n-test-ca")
        self.other_ca_file, _, _ = make_ca(d, "o16n-other-ca")
        cert, key = server_certificate(d, ca_key, ca_cert)
        (d / "ad.schema").write_text(AD_SCHEMA)
        (d / "slapd.conf").write_text(self._slapd_conf(cert, key))
        (d / "data.ldif").write_text(self._ldif(), encoding="utf-8")
        result = subprocess.run(
            [SLAPADD, "-q", "-f", str(d / "slapd.conf"), "-l", str(d / "data.ldif")],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed: {(result.stdout + result.stderr).decode()}")
        self._prepared = True

    def _slapd_conf(self, cert: Path, key: Path) -> str:
        d = self.directory
        schemas = "".join(
            f"include {SCHEMA_DIR / n}.schema\n" for n in ("core", "cosine", "nis", "inetorgperson")
        )
        return f"""\
{schemas}include {d / "ad.schema"}
pidfile {d / "slapd.pid"}
argsfile {d / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload ppolicy
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
loglevel none

database mdb
maxsize 16777216
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw {self.admin_password}
directory {d / "db"}
index objectClass eq
index uid,cn,sAMAccountName,member,uniqueMember eq
overlay ppolicy
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{QUERY_DN}" read
    by self read
    by * none

database monitor
access to *
    by dn.exact="{ADMIN_DN}" read
    by * none
"""

    def _ldif(self) -> str:
        out = StringIO()
        writer = ldif.LDIFWriter(out, cols=1000)

        def add(dn: str, attrs: Mapping[str, list[str]]) -> None:
            writer.unparse(dn, {k: [v.encode() for v in vs] for k, vs in attrs.items()})

        add(BASE, {"objectClass": ["dcObject", "organization"], "dc": ["o16n"], "o": ["o16n"]})
        for ou in ("people", "groups", "service"):
            add(f"ou={ou},{BASE}", {"objectClass": ["organizationalUnit"], "ou": [ou]})
        add(
            f"ou=contractors,{PEOPLE}",
            {"objectClass": ["organizationalUnit"], "ou": ["contractors"]},
        )
        add(
            QUERY_DN,
            {
                "objectClass": ["applicationProcess", "simpleSecurityObject"],
                "cn": ["query"],
                "userPassword": [self.query_password],
            },
        )
        group_dns = {name: f"cn={name},{GROUPS}" for name in GROUP_NAMES}
        for user in self.users.values():
            attrs: dict[str, list[str]] = {
                "objectClass": ["inetOrgPerson"],
                "uid": [user.login],
                "cn": [user.display_name],
                "sn": [user.display_name.split()[-1]],
                "mail": [user.email],
                "userPassword": [user.password],
            }
            if user.account_control is not None:
                attrs["objectClass"].append("o16nAdAccount")
                attrs["sAMAccountName"] = [user.login]
                attrs["userPrincipalName"] = [f"{user.login}@o16n.test"]
                attrs["userAccountControl"] = [str(user.account_control)]
                attrs["memberOf"] = [group_dns[g] for g in sorted(user.groups)]
            if user.locked:
                attrs["pwdAccountLockedTime"] = ["000001010000Z"]
            for name, values in user.extra.items():
                attrs[name] = list(values)
            add(user.dn, attrs)
        for name in GROUP_NAMES:
            if name == "o16n-readers":  # zoe by uniqueMember; bob only by his memberOf
                zoe = self.users["zoe"].dn
                add(
                    group_dns[name],
                    {"objectClass": ["groupOfUniqueNames"], "cn": [name], "uniqueMember": [zoe]},
                )
                continue
            members = [
                u.dn for u in self.users.values() if name in u.groups and u.account_control is None
            ]
            # groupOfNames needs a member: the query user stands in for an empty group.
            add(
                group_dns[name],
                {"objectClass": ["groupOfNames"], "cn": [name], "member": members or [QUERY_DN]},
            )
        return out.getvalue()


_MAIN = threading.main_thread()
_PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies, even killed."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
