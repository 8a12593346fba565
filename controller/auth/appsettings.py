"""ML Server's ``appsettings.json``: the ``Authentication`` and ``Authorization`` sections.

Organisations moving off ML Server bring this file; ``O16N_APPSETTINGS`` names it. Keys
and meanings are ML Server 9.x's ("Configure authentication", "Configure roles"), values
as its files write them (``"True"``, ``"636"``). What ML Server kept in its key store
(``QueryUserPasswordEncrypted``, ``KeyEncrypted``) cannot be read here: the secret comes
from an environment variable or a file instead, and the start stops saying so. Settings
ML Server never had (StartTLS, a CA file, timeouts, the JWKS cooldown) are ``O16N_*``
variables, so the operator's file stays ML Server's.

A wrong key or value stops the start with a message naming it (``SettingsError``);
unknown keys are warnings (ML Server's files carry many sections o16n does not use).
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from controller.roles import Role
from controller.settings import Settings, SettingsError, env_or_file_secret

log = logging.getLogger(__name__)

_LDAP_KEYS = {
    "Enabled",
    "Host",
    "Port",
    "UseLDAPS",
    "BindFilter",
    "QueryUserDn",
    "QueryUserPassword",
    "QueryUserPasswordEncrypted",
    "SearchBase",
    "SearchFilter",
    "UniqueUserIdentifierAttributeName",
    "DisplayNameAttributeName",
    "EmailAttributeName",
}
_AAD_KEYS = {"Enabled", "Authority", "Audience", "ClientId", "Key", "KeyEncrypted"}
_AUTHZ_KEYS = {"Owner", "Contributor", "Reader", "CacheLifeTimeInMinutes"}
#: ML Server's own ``Authentication`` sections o16n has no use for (its local admin
#: account, its token-signing certificate): present in every file it wrote, so silent
_ML_SERVER_ONLY = {"AdminAccount", "JWTSigningCertificate"}


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """How to find and bind a user in Active Directory / LDAP."""

    host: str
    port: int
    use_ldaps: bool
    #: upgrade ``ldap://`` with StartTLS (``O16N_LDAP_STARTTLS``; on unless switched off)
    start_tls: bool
    #: a DN template (``{0}`` = the user name, DN-escaped) to bind the user with, instead
    #: of the DN of the entry the search found
    bind_filter: str | None
    query_user_dn: str
    query_user_password: SecretStr
    search_base: str
    #: an LDAP filter with ``{0}`` = the user name, escaped per RFC 4515
    search_filter: str
    unique_id_attribute: str
    display_name_attribute: str | None
    email_attribute: str | None
    #: CA certificates that verify the server's (``O16N_LDAP_CA_FILE``); ``None``: the system's
    ca_file: Path | None
    #: seconds to connect, and for each operation (``O16N_LDAP_TIMEOUT``)
    timeout: float

    @property
    def url(self) -> str:
        scheme = "ldaps" if self.use_ldaps else "ldap"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AadConfig:
    """How to verify Azure AD (any OpenID Connect provider's) access tokens."""

    #: e.g. ``https://login.microsoftonline.com/<tenant>``; discovery is under it
    authority: str
    #: the ``aud`` tokens must carry
    audience: str
    client_id: str | None
    key: SecretStr | None
    #: CA certificates for the provider's https (``O16N_OIDC_CA_FILE``); ``None``: the system's
    ca_file: Path | None
    #: seconds between two JWKS fetches that an unknown ``kid`` may cause
    jwks_cooldown: float
    #: seconds of clock skew allowed on ``exp`` / ``nbf``
    leeway: float

    @property
    def discovery_url(self) -> str:
        return self.authority.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class RoleGroups:
    """``Authorization``: which directory groups hold which role (ML Server's rules)."""

    owner: frozenset[str] = frozenset()
    contributor: frozenset[str] = frozenset()
    reader: frozenset[str] = frozenset()
    #: seconds a directory user's roles are trusted before they are looked up again
    cache_lifetime: float = 60 * 60.0

    def role_for(self, groups: Iterable[str]) -> Role | None:
        """The highest role any of ``groups`` gives (names compared case-insensitively);
        for a user in no listed group, ML Server's rule: Contributor when no roles are
        declared or only Owner is, Reader when Contributor is, no access (``None``) when
        Reader is."""
        mine = {g.casefold() for g in groups}
        for role, names in (
            (Role.OWNER, self.owner),
            (Role.CONTRIBUTOR, self.contributor),
            (Role.READER, self.reader),
        ):
            if mine & names:
                return role
        if self.reader:
            return None
        if self.contributor:
            return Role.READER
        return Role.CONTRIBUTOR


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """Where users sign in: at most one directory, and its role mapping."""

    ldap: LdapConfig | None = None
    aad: AadConfig | None = None
    roles: RoleGroups = field(default_factory=RoleGroups)
    #: local accounts stay usable beside the directory (``O16N_LOCAL_ACCOUNTS=on``)
    local_accounts: bool = True

    @property
    def token_sources(self) -> frozenset[str]:
        """Sources of the accounts our own tokens may be issued to: local ones unless off,
        LDAP users while LDAP is on (Azure AD users bring their provider's tokens)."""
        return frozenset({"local"} if self.local_accounts else set()) | frozenset(
            {"ldap"} if self.ldap else set()
        )

    @property
    def source(self) -> str:
        """``ldap``, ``aad`` or ``local``: where users not known locally come from."""
        return "ldap" if self.ldap else "aad" if self.aad else "local"


def load(settings: Settings) -> DirectoryConfig:
    """The directory configuration ``settings`` name; ``SettingsError`` naming what is
    wrong. Without ``O16N_APPSETTINGS``: local accounts only."""
    if settings.appsettings is None:
        return DirectoryConfig()
    path = settings.appsettings
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise SettingsError(f"O16N_APPSETTINGS: cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(f"O16N_APPSETTINGS: {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"O16N_APPSETTINGS: {path} must hold a JSON object")
    return parse(document, settings)


@functools.lru_cache(maxsize=8)
def configured(settings: Settings) -> DirectoryConfig:
    """``load`` once per ``settings``: ``o16n serve`` checks the file before anything
    starts, and the app factory takes the same result, its warnings logged once."""
    return load(settings)


def parse(document: Mapping[str, Any], settings: Settings) -> DirectoryConfig:
    """``document``'s ``Authentication`` and ``Authorization`` sections."""
    auth_keys = {"LDAP", "AzureActiveDirectory", *_ML_SERVER_ONLY}
    auth = _section(document, "Authentication", auth_keys, warn_unknown=False)
    ldap_raw = _section(auth, "Authentication.LDAP", _LDAP_KEYS)
    aad_raw = _section(auth, "Authentication.AzureActiveDirectory", _AAD_KEYS)
    for key in auth:
        if key not in auth_keys:
            log.warning("appsettings: Authentication.%s is not used by o16n; ignored", key)
    ldap_on = _bool(ldap_raw, "Authentication.LDAP", "Enabled", default=False)
    aad_on = _bool(aad_raw, "Authentication.AzureActiveDirectory", "Enabled", default=False)
    if ldap_on and aad_on:
        raise SettingsError(
            "appsettings: Authentication.LDAP and Authentication.AzureActiveDirectory are both "
            "enabled; ML Server allows one directory at a time, and so does o16n"
        )
    roles = _roles(_section(document, "Authorization", _AUTHZ_KEYS))
    return DirectoryConfig(
        ldap=_ldap(ldap_raw, settings) if ldap_on else None,
        aad=_aad(aad_raw, settings) if aad_on else None,
        roles=roles,
        local_accounts=settings.local_accounts or not (ldap_on or aad_on),
    )


def _ldap(raw: Mapping[str, Any], settings: Settings) -> LdapConfig:
    where = "Authentication.LDAP"
    use_ldaps = _bool(raw, where, "UseLDAPS", default=False)
    start_tls = settings.ldap_starttls if settings.ldap_starttls is not None else not use_ldaps
    if use_ldaps and settings.ldap_starttls:
        raise SettingsError(
            f"appsettings: {where}.UseLDAPS is True and O16N_LDAP_STARTTLS is on; choose one"
        )
    if not use_ldaps and not start_tls:
        log.warning(
            "appsettings: %s uses plain ldap:// without StartTLS: passwords cross the "
            "network in clear (set UseLDAPS or leave O16N_LDAP_STARTTLS on)",
            where,
        )
    search_filter = _str(raw, where, "SearchFilter")
    if "{0}" not in search_filter:
        raise SettingsError(f"appsettings: {where}.SearchFilter must contain {{0}}, the user name")
    if not search_filter.startswith("("):
        search_filter = f"({search_filter})"
    bind_filter = _str(raw, where, "BindFilter", required=False)
    if bind_filter is not None and "{0}" not in bind_filter:
        raise SettingsError(f"appsettings: {where}.BindFilter must contain {{0}}, the user name")
    return LdapConfig(
        host=_host(_str(raw, where, "Host"), where),
        port=_int(raw, where, "Port", default=636 if use_ldaps else 389, low=1, high=65535),
        use_ldaps=use_ldaps,
        start_tls=start_tls,
        bind_filter=bind_filter,
        query_user_dn=_str(raw, where, "QueryUserDn"),
        query_user_password=_secret(
            raw,
            where,
            "QueryUserPassword",
            "QueryUserPasswordEncrypted",
            settings.ldap_query_password,
            settings.ldap_query_password_file,
            "O16N_LDAP_QUERY_PASSWORD",
        ),
        search_base=_str(raw, where, "SearchBase"),
        search_filter=search_filter,
        unique_id_attribute=_attribute(raw, where, "UniqueUserIdentifierAttributeName", True) or "",
        display_name_attribute=_attribute(raw, where, "DisplayNameAttributeName", False),
        email_attribute=_attribute(raw, where, "EmailAttributeName", False),
        ca_file=_ca_file(settings.ldap_ca_file, "O16N_LDAP_CA_FILE"),
        timeout=settings.ldap_timeout,
    )


def _aad(raw: Mapping[str, Any], settings: Settings) -> AadConfig:
    where = "Authentication.AzureActiveDirectory"
    authority = _str(raw, where, "Authority")
    parts = urlsplit(authority)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise SettingsError(
            f"appsettings: {where}.Authority must be an https:// URL (http only on loopback)"
        )
    key = None
    if raw.get("Key") not in (None, "") or settings.aad_key or settings.aad_key_file:
        key = _secret(
            raw,
            where,
            "Key",
            "KeyEncrypted",
            settings.aad_key,
            settings.aad_key_file,
            "O16N_AAD_KEY",
        )
    return AadConfig(
        authority=authority,
        audience=_str(raw, where, "Audience"),
        client_id=_str(raw, where, "ClientId", required=False),
        key=key,
        ca_file=_ca_file(settings.oidc_ca_file, "O16N_OIDC_CA_FILE"),
        jwks_cooldown=settings.oidc_jwks_cooldown,
        leeway=settings.oidc_leeway,
    )


def _roles(raw: Mapping[str, Any]) -> RoleGroups:
    where = "Authorization"
    minutes = _int(raw, where, "CacheLifeTimeInMinutes", default=60, low=0, high=7 * 24 * 60)
    return RoleGroups(
        owner=_groups(raw, where, "Owner"),
        contributor=_groups(raw, where, "Contributor"),
        reader=_groups(raw, where, "Reader"),
        cache_lifetime=minutes * 60.0,
    )


# --- values as ML Server's files write them ------------------------------------------------


def _section(
    parent: Mapping[str, Any], where: str, known: set[str], *, warn_unknown: bool = True
) -> Mapping[str, Any]:
    """The object ``where`` names in ``parent``, its ``known`` keys spelt as ML Server's
    docs do. Names are compared case-insensitively, as ASP.NET Core's configuration (and
    so ML Server) does: ``"useLdaps"`` is ``UseLDAPS``; a key given twice is refused."""
    name = where.rsplit(".", 1)[-1]
    found = [key for key in parent if key.casefold() == name.casefold()]
    if len(found) > 1:
        raise SettingsError(f"appsettings: {where} is given twice ({', '.join(found)})")
    value = parent[found[0]] if found else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"appsettings: {where} must be a JSON object")
    spelling = {key.casefold(): key for key in known}
    section: dict[str, Any] = {}
    for key, item in value.items():
        canonical: str = spelling.get(key.casefold()) or key
        if canonical in section:
            raise SettingsError(f"appsettings: {where}.{canonical} is given twice")
        section[canonical] = item
        if warn_unknown and canonical not in known:
            log.warning("appsettings: %s.%s is not a known key; ignored", where, key)
    return section


def _bool(raw: Mapping[str, Any], where: str, key: str, *, default: bool) -> bool:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingsError(f"appsettings: {where}.{key} must be true or false, not {value!r}")


def _int(raw: Mapping[str, Any], where: str, key: str, *, default: int, low: int, high: int) -> int:
    value = raw.get(key)
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not low <= number <= high:
        raise SettingsError(
            f"appsettings: {where}.{key} must be a whole number from {low} to {high}, not {value!r}"
        )
    return number


def _str(
    raw: Mapping[str, Any], where: str, key: str, *, required: bool = True, secret: bool = False
) -> Any:
    """A string value, trimmed; a ``secret`` is kept as written (its spaces are part of
    it), and its wrong value is named, never shown (the message goes to the terminal and
    the log)."""
    value = raw.get(key)
    if isinstance(value, str) and value.strip():
        return value if secret else value.strip()
    if value is None or value == "":
        if required:
            raise SettingsError(f"appsettings: {where}.{key} is required")
        return None
    shown = f"a JSON {type(value).__name__}" if secret else repr(value)
    raise SettingsError(f"appsettings: {where}.{key} must be a string, not {shown}")


def _host(value: str, where: str) -> str:
    if any(c in value for c in "/ ?#@") or value.count(":") == 1:
        raise SettingsError(
            f"appsettings: {where}.Host must be a host name or address (the port goes in "
            f"Port), not {value!r}"
        )
    return value.strip("[]")


def _ca_file(path: Path | None, env_name: str) -> Path | None:
    """``path`` if it holds CA certificates. Checked with the rest of the configuration,
    before anything starts: libldap reads the file only at the first connection, and then
    fails with a bare "option error" (not an ``LDAPError``), so a wrong path would fail
    every login; the OIDC verifier reads it as the app starts, too late for a clean exit."""
    if path is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"{env_name}: cannot read CA certificates from {path}: {exc}"
            ) from None
    return path


def _attribute(raw: Mapping[str, Any], where: str, key: str, required: bool) -> str | None:
    value: str | None = _str(raw, where, key, required=required)
    if value is not None and not value.replace("-", "").replace(".", "").isalnum():
        raise SettingsError(f"appsettings: {where}.{key} must be an attribute name, not {value!r}")
    return value


def _groups(raw: Mapping[str, Any], where: str, key: str) -> frozenset[str]:
    value = raw.get(key)
    if value is None or value == "":
        return frozenset()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise SettingsError(
            f"appsettings: {where}.{key} must be a group name or a list of group names"
        )
    return frozenset(n.strip().casefold() for n in names)


def _secret(
    raw: Mapping[str, Any],
    where: str,
    key: str,
    encrypted_key: str,
    from_env: SecretStr | None,
    from_file: Path | None,
    env_name: str,
) -> SecretStr:
    """The secret ``key`` names: from ``<env_name>`` or ``<env_name>_FILE`` if set, else
    from the file in clear. ML Server's encrypted form cannot be read without its key store."""
    given = env_or_file_secret(from_env, from_file, env_name)
    if given is not None:
        return given
    if _bool(raw, where, encrypted_key, default=False):
        raise SettingsError(
            f"appsettings: {where}.{key} is encrypted ({encrypted_key} is true), and only ML "
            f"Server's key store can read it. Give the secret in {env_name}, or in a file "
            f"named by {env_name}_FILE, or write it in clear with {encrypted_key}: false"
        )
    value = _str(raw, where, key, required=False, secret=True)
    if value is None:
        raise SettingsError(
            f"appsettings: {where}.{key} is required (or give it in {env_name} or {env_name}_FILE)"
        )
    return SecretStr(value)
