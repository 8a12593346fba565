"""``O16N_APPSETTINGS``: ML Server's appsettings.json read with its key names and value
forms; what cannot work stops the start with a message naming the key, what o16n does not
use is ignored (silently outside the directory sections, with a warning inside them)."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from controller.auth import appsettings
from controller.auth.appsettings import RoleGroups
from controller.roles import Role
from controller.settings import Settings, SettingsError
from tests.conftest import database_env
from tests.tls_certs import make_ca

ROOT = Path(__file__).resolve().parents[2]

#: A web node's appsettings.json as ML Server 9.x writes it (the sections o16n does not
#: use included), LDAP switched on the way its docs say, values in the file's own forms.
ML_SERVER_FILE: dict[str, Any] = {
    "Logging": {
        "IncludeScopes": False,
        "LogLevel": {"Default": "Warning", "System": "Warning", "Microsoft": "Warning"},
    },
    "ConnectionStrings": {
        "sqlserver": {
            "Enabled": False,
            "Connection": "Data Source=localhost;Initial Catalog=RServer;Integrated Security=True;",
            "ConnectionStringEncrypted": False,
        },
        "postgresql": {
            "Enabled": False,
            "Connection": "User ID=deployr;Password=;Host=localhost;Port=5432;Database=deployr;",
            "ConnectionStringEncrypted": False,
        },
        "defaultDb": {"Enabled": True, "Connection": "Data Source={0}", "Path": "deployr.db"},
    },
    "Authentication": {
        "AdminAccount": {"Enabled": True},
        "AzureActiveDirectory": {
            "Enabled": False,
            "Authority": "https://login.windows.net/rserver.contoso.com",
            "Audience": "00000000-0000-0000-0000-000000000000",
            "ClientId": "00000000-0000-0000-0000-000000000000",
            "Key": "ABCD000000000000000000000000WXYZ",
            "KeyEncrypted": True,
        },
        "LDAP": {
            "Enabled": True,
            "Host": "dc1.test.com",
            "Port": "636",
            "UseLDAPS": "True",
            "BindFilter": "",
            "QueryUserDn": "CN=deployradmin,CN=DeployR,DC=TEST,DC=COM",
            "QueryUserPasswordEncrypted": False,
            "QueryUserPassword": "query-secret-1",
            "SearchBase": "CN=DeployR,DC=TEST,DC=COM",
            "SearchFilter": "cn={0}",
            "UniqueUserIdentifierAttributeName": "userPrincipalName",
            "DisplayNameAttributeName": "name",
            "EmailAttributeName": "mail",
        },
        "JWTSigningCertificate": {
            "Enabled": False,
            "StoreName": "My",
            "StoreLocation": "CurrentUser",
            "SubjectName": "CN=LOCALHOST",
            "Thumbprint": "",
        },
    },
    "Authorization": {
        "Owner": ["Administrators"],
        "Contributor": ["RProgrammers", "Quality"],
        "Reader": [],
        "CacheLifeTimeInMinutes": "30",
    },
    "Kestrel": {
        "Port": 12800,
        "Host": "*",
        "HttpsEnabled": False,
        "HttpsCertificate": {"Enabled": False, "StoreName": "My", "StoreLocation": "LocalMachine"},
    },
    "BackEndConfiguration": {
        "Uris": {"Values": ["http://localhost:12805"], "Ranges": ["http://10.0.1.0-255:12805"]},
        "MaxNumberOfThreadsPerBatchExecution": 100,
    },
    "CORS": {"Enabled": False, "Origins": []},
}


def ml_file(**changes: dict[str, Any]) -> dict[str, Any]:
    """``ML_SERVER_FILE`` with keys of ``LDAP``, ``AzureActiveDirectory`` (under
    Authentication) or ``Authorization`` changed; a value ``None`` removes the key."""
    document = copy.deepcopy(ML_SERVER_FILE)
    for section, values in changes.items():
        target = document[section] if section == "Authorization" else document["Authentication"]
        target = target if section == "Authorization" else target[section]
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return document


def settings_for(tmp_path: Path, document: Any, *, bom: bool = False, **env: Any) -> Settings:
    """Settings naming ``document`` written as ``tmp_path/appsettings.json``."""
    path = tmp_path / "appsettings.json"
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return Settings.from_env({}, data_dir=tmp_path / "data", appsettings=path, **env)


def load(tmp_path: Path, document: Any, **env: Any) -> appsettings.DirectoryConfig:
    return appsettings.load(settings_for(tmp_path, document, **env))


def refused(tmp_path: Path, document: Any, **env: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, document, **env)
    return str(caught.value)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_appsettings_only_local_accounts(tmp_path: Path) -> None:
    config = appsettings.load(Settings.from_env({}, data_dir=tmp_path))
    assert config.ldap is None and config.aad is None and config.local_accounts
    assert config.source == "local"
    assert config.roles.role_for([]) is Role.CONTRIBUTOR


def test_an_ml_server_file_loads_and_what_o16n_does_not_use_is_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = load(tmp_path, ML_SERVER_FILE)
    assert warnings(caplog) == []
    assert config.source == "ldap" and config.aad is None
    assert config.local_accounts is False  # off while a directory is on
    ldap = config.ldap
    assert ldap is not None
    assert (ldap.host, ldap.port, ldap.use_ldaps, ldap.start_tls) == (
        "dc1.test.com",
        636,
        True,
        False,
    )
    assert ldap.url == "ldaps://dc1.test.com:636"
    assert ldap.bind_filter is None  # "" is ML Server's "not set"
    assert ldap.query_user_dn == "CN=deployradmin,CN=DeployR,DC=TEST,DC=COM"
    assert ldap.query_user_password.get_secret_value() == "query-secret-1"
    assert ldap.search_base == "CN=DeployR,DC=TEST,DC=COM"
    assert ldap.search_filter == "(cn={0})"
    assert ldap.unique_id_attribute == "userPrincipalName"
    assert (ldap.display_name_attribute, ldap.email_attribute) == ("name", "mail")
    assert ldap.ca_file is None and ldap.timeout == 10.0
    assert config.roles == RoleGroups(
        owner=frozenset({"administrators"}),
        contributor=frozenset({"rprogrammers", "quality"}),
        reader=frozenset(),
        cache_lifetime=30 * 60.0,
    )


def test_json_types_and_ml_servers_strings_mean_the_same(tmp_path: Path) -> None:
    as_strings = load(tmp_path, ml_file(LDAP={"Enabled": "True", "UseLDAPS": "true"}))
    as_json = load(
        tmp_path,
        ml_file(
            LDAP={"Enabled": True, "UseLDAPS": True, "Port": 636},
            Authorization={"CacheLifeTimeInMinutes": 30},
        ),
    )
    assert as_strings == as_json
    plain = load(tmp_path, ml_file(LDAP={"UseLDAPS": "False", "Port": None}))
    assert plain.ldap is not None
    assert (plain.ldap.port, plain.ldap.use_ldaps, plain.ldap.start_tls) == (389, False, True)


def test_o16n_settings_fill_in_what_ml_server_never_had(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path, "ca")
    config = load(
        tmp_path,
        ml_file(LDAP={"UseLDAPS": "False", "Port": "389"}),
        ldap_ca_file=ca,
        ldap_timeout=2.5,
        ldap_starttls=True,
        local_accounts=True,
    )
    assert config.ldap is not None
    assert (config.ldap.ca_file, config.ldap.timeout, config.ldap.start_tls) == (ca, 2.5, True)
    assert config.local_accounts is True  # the break-glass


def test_azure_ad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = load(
        tmp_path,
        ml_file(
            LDAP={"Enabled": False},
            AzureActiveDirectory={
                "Enabled": "True",
                "Authority": "https://login.windows.net/rserver.contoso.com/",
                "KeyEncrypted": False,
            },
        ),
        oidc_jwks_cooldown=5,
    )
    assert warnings(caplog) == []
    aad = config.aad
    assert config.source == "aad" and config.ldap is None and aad is not None
    assert aad.discovery_url == (
        "https://login.windows.net/rserver.contoso.com/.well-known/openid-configuration"
    )
    assert aad.audience == "00000000-0000-0000-0000-000000000000"
    assert aad.client_id == "00000000-0000-0000-0000-000000000000"
    assert aad.key is not None and aad.key.get_secret_value() == "ABCD000000000000000000000000WXYZ"
    assert (aad.jwks_cooldown, aad.leeway) == (5, 60.0)


def test_azure_ad_authority_must_be_https_except_on_loopback(tmp_path: Path) -> None:
    def aad(authority: str) -> dict[str, Any]:
        return ml_file(
            LDAP={"Enabled": False},
            AzureActiveDirectory={"Enabled": True, "Authority": authority, "KeyEncrypted": False},
        )

    assert "Authority" in refused(tmp_path, aad("http://login.windows.net/tenant"))
    config = load(tmp_path, aad("http://127.0.0.1:8123/tenant"))
    assert config.aad is not None and config.aad.authority == "http://127.0.0.1:8123/tenant"


def test_ldap_and_azure_ad_both_enabled_is_refused(tmp_path: Path) -> None:
    message = refused(
        tmp_path, ml_file(AzureActiveDirectory={"Enabled": "True", "KeyEncrypted": False})
    )
    assert "Authentication.LDAP" in message and "Authentication.AzureActiveDirectory" in message


def test_an_encrypted_query_password_is_refused_saying_how_to_give_it(tmp_path: Path) -> None:
    encrypted = ml_file(
        LDAP={"QueryUserPasswordEncrypted": "True", "QueryUserPassword": "ABCD0000mnop0000WXYZ"}
    )
    message = refused(tmp_path, encrypted)
    assert "Authentication.LDAP.QueryUserPassword" in message
    assert "O16N_LDAP_QUERY_PASSWORD" in message and "O16N_LDAP_QUERY_PASSWORD_FILE" in message
    assert "ABCD0000mnop0000WXYZ" not in message

    config = load(tmp_path, encrypted, ldap_query_password="from-the-env")
    assert config.ldap is not None
    assert config.ldap.query_user_password.get_secret_value() == "from-the-env"

    secret = tmp_path / "query-password"
    secret.write_text("from-a-file\n", encoding="utf-8")
    config = load(tmp_path, encrypted, ldap_query_password_file=secret)
    assert config.ldap is not None
    assert config.ldap.query_user_password.get_secret_value() == "from-a-file"

    message = refused(tmp_path, encrypted, ldap_query_password="a", ldap_query_password_file=secret)
    assert "O16N_LDAP_QUERY_PASSWORD" in message and "both" in message
    secret.write_text("", encoding="utf-8")
    assert "empty" in refused(tmp_path, encrypted, ldap_query_password_file=secret)
    assert "cannot read" in refused(
        tmp_path, encrypted, ldap_query_password_file=tmp_path / "missing"
    )


def test_an_encrypted_azure_ad_key_is_refused_saying_how_to_give_it(tmp_path: Path) -> None:
    encrypted = ml_file(LDAP={"Enabled": False}, AzureActiveDirectory={"Enabled": True})
    message = refused(tmp_path, encrypted)
    assert "Authentication.AzureActiveDirectory.Key" in message
    assert "O16N_AAD_KEY" in message and "O16N_AAD_KEY_FILE" in message
    assert "ABCD000000000000000000000000WXYZ" not in message

    config = load(tmp_path, encrypted, aad_key="env-key")
    assert config.aad is not None and config.aad.key is not None
    assert config.aad.key.get_secret_value() == "env-key"
    secret = tmp_path / "aad-key"
    secret.write_text("file-key\r\n", encoding="utf-8")
    config = load(tmp_path, encrypted, aad_key_file=secret)
    assert config.aad is not None and config.aad.key == SecretStr("file-key")

    # a Key is optional (verifying tokens needs none): no Key, nothing to refuse
    config = load(
        tmp_path,
        ml_file(
            LDAP={"Enabled": False},
            AzureActiveDirectory={"Enabled": True, "Key": "", "KeyEncrypted": True},
        ),
    )
    assert config.aad is not None and config.aad.key is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"LDAP": {"Port": "abc"}}, "Authentication.LDAP.Port"),
        ({"LDAP": {"Port": 70000}}, "Authentication.LDAP.Port"),
        ({"LDAP": {"Port": True}}, "Authentication.LDAP.Port"),
        ({"LDAP": {"UseLDAPS": "yes"}}, "Authentication.LDAP.UseLDAPS"),
        ({"LDAP": {"Enabled": "maybe"}}, "Authentication.LDAP.Enabled"),
        ({"AzureActiveDirectory": {"Enabled": 1}}, "Authentication.AzureActiveDirectory.Enabled"),
        ({"Authorization": {"Owner": 5}}, "Authorization.Owner"),
        ({"Authorization": {"Reader": ["ok", ""]}}, "Authorization.Reader"),
        ({"Authorization": {"CacheLifeTimeInMinutes": "-1"}}, "CacheLifeTimeInMinutes"),
        ({"LDAP": {"SearchFilter": "cn=someone"}}, "Authentication.LDAP.SearchFilter"),
        ({"LDAP": {"BindFilter": "CN=x,DC=TEST"}}, "Authentication.LDAP.BindFilter"),
        ({"LDAP": {"Host": None}}, "Authentication.LDAP.Host"),
        ({"LDAP": {"Host": "ldaps://dc1.test.com"}}, "Authentication.LDAP.Host"),
        ({"LDAP": {"Host": "dc1.test.com:636"}}, "Authentication.LDAP.Host"),
        ({"LDAP": {"SearchBase": ""}}, "Authentication.LDAP.SearchBase"),
        ({"LDAP": {"QueryUserDn": ["CN=x"]}}, "Authentication.LDAP.QueryUserDn"),
        ({"LDAP": {"QueryUserPassword": None}}, "Authentication.LDAP.QueryUserPassword"),
        (
            {"LDAP": {"UniqueUserIdentifierAttributeName": "user(Principal)"}},
            "UniqueUserIdentifierAttributeName",
        ),
        ({"LDAP": {"EmailAttributeName": 7}}, "Authentication.LDAP.EmailAttributeName"),
    ],
)
def test_a_wrong_value_stops_the_start_naming_the_key(
    tmp_path: Path, changes: dict[str, dict[str, Any]], named: str
) -> None:
    assert named in refused(tmp_path, ml_file(**changes))


def test_a_section_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    document = copy.deepcopy(ML_SERVER_FILE)
    document["Authentication"]["LDAP"] = "on"
    assert "Authentication.LDAP must be a JSON object" in refused(tmp_path, document)
    document = copy.deepcopy(ML_SERVER_FILE)
    document["Authorization"] = ["Administrators"]
    assert "Authorization must be a JSON object" in refused(tmp_path, document)


def test_unknown_keys_in_the_directory_sections_are_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    document = ml_file(
        LDAP={"SkipCertificateValidation": "True"},
        AzureActiveDirectory={"Tenant": "contoso"},
        Authorization={"Admins": ["x"]},
    )
    document["Authentication"]["LDPA"] = {"Enabled": True}  # a typo, not ML Server's
    config = load(tmp_path, document)
    assert config.ldap is not None  # the start goes on
    seen = "\n".join(warnings(caplog))
    for key in (
        "Authentication.LDAP.SkipCertificateValidation",
        "Authentication.AzureActiveDirectory.Tenant",
        "Authorization.Admins",
        "Authentication.LDPA",
    ):
        assert key in seen
    assert len(warnings(caplog)) == 4  # ML Server's AdminAccount, JWTSigningCertificate: not


def test_plain_ldap_without_starttls_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = load(tmp_path, ml_file(LDAP={"UseLDAPS": False}), ldap_starttls=False)
    assert config.ldap is not None and not config.ldap.start_tls
    assert "in clear" in "\n".join(warnings(caplog))
    message = refused(tmp_path, ML_SERVER_FILE, ldap_starttls=True)
    assert "UseLDAPS" in message and "O16N_LDAP_STARTTLS" in message


def test_a_missing_unreadable_or_non_json_file_is_named(tmp_path: Path) -> None:
    missing = Settings.from_env({}, data_dir=tmp_path, appsettings=tmp_path / "nope.json")
    with pytest.raises(SettingsError, match=r"O16N_APPSETTINGS: cannot read .*nope\.json"):
        appsettings.load(missing)
    message = refused(tmp_path, '{"Authentication": {"LDAP": {"Enabled": true,}')
    assert message.startswith("O16N_APPSETTINGS:") and "is not JSON" in message
    assert "must hold a JSON object" in refused(tmp_path, "[1, 2]")
    settings = settings_for(tmp_path, ML_SERVER_FILE)
    assert settings.appsettings is not None
    settings.appsettings.write_bytes(b"\xff\xfe{}")  # not UTF-8
    with pytest.raises(SettingsError, match="is not JSON"):
        appsettings.load(settings)


def test_a_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """ML Server's files, saved by Windows tools, often start with a UTF-8 BOM."""
    config = appsettings.load(settings_for(tmp_path, ML_SERVER_FILE, bom=True))
    assert config.ldap is not None and config.ldap.host == "dc1.test.com"


def test_directory_sections_may_be_absent(tmp_path: Path) -> None:
    config = load(tmp_path, {"Logging": {}, "Kestrel": {"Port": 12800}})
    assert config == appsettings.DirectoryConfig()


# --- roles: ML Server's rules (docs: "Configure roles") ------------------------------------


def groups(
    owner: tuple[str, ...] = (), contributor: tuple[str, ...] = (), reader: tuple[str, ...] = ()
) -> RoleGroups:
    def names(given: tuple[str, ...]) -> frozenset[str]:
        return frozenset(g.casefold() for g in given)

    return RoleGroups(owner=names(owner), contributor=names(contributor), reader=names(reader))


@pytest.mark.parametrize(
    ("declared", "nobody"),
    [
        ({}, Role.CONTRIBUTOR),  # no roles declared
        ({"owner": ("Admins",)}, Role.CONTRIBUTOR),  # only Owner
        ({"owner": ("Admins",), "contributor": ("Devs",)}, Role.READER),
        ({"contributor": ("Devs",)}, Role.READER),
        ({"owner": ("Admins",), "contributor": ("Devs",), "reader": ("Staff",)}, None),
        ({"reader": ("Staff",)}, None),
        ({"owner": ("Admins",), "reader": ("Staff",)}, None),
    ],
)
def test_a_user_in_no_listed_group(
    declared: dict[str, tuple[str, ...]], nobody: Role | None
) -> None:
    assert groups(**declared).role_for([]) is nobody
    assert groups(**declared).role_for(["Unlisted", "Other"]) is nobody


def test_the_highest_role_wins_and_names_are_case_insensitive() -> None:
    roles = groups(owner=("Admins",), contributor=("Devs", "Quality"), reader=("Staff",))
    assert roles.role_for(["staff", "DEVS"]) is Role.CONTRIBUTOR
    assert roles.role_for(["Staff", "quality", "aDMINS"]) is Role.OWNER
    assert roles.role_for(["STAFF"]) is Role.READER
    assert roles.role_for(["Straße"]) is None


def test_roles_from_the_file_are_case_insensitive(tmp_path: Path) -> None:
    config = load(tmp_path, ML_SERVER_FILE)
    assert config.roles.role_for(["administrators"]) is Role.OWNER
    assert config.roles.role_for(["QUALITY"]) is Role.CONTRIBUTOR
    assert config.roles.role_for(["Everyone"]) is Role.READER  # Contributor is declared
    single = load(tmp_path, ml_file(Authorization={"Owner": "Administrators", "Contributor": []}))
    assert single.roles.owner == frozenset({"administrators"})
    assert single.roles.role_for([]) is Role.CONTRIBUTOR


# --- the start ------------------------------------------------------------------------------


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m controller serve`` in a fresh process with only ``env`` as O16N_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    return subprocess.run(
        [sys.executable, "-m", "controller", "serve"],
        env={
            **clean,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_image'}",
            "O16N_DATA_DIR": str(tmp_path / "data"),
            **database_env(tmp_path / "data"),
            "O16N_ENGINE": "fake",
            "O16N_HOST": "192.0.2.1",  # not ours: were the start to go on, it fails at once
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (ml_file(LDAP={"Port": "abc"}), "Authentication.LDAP.Port"),
        (ml_file(LDAP={"QueryUserPasswordEncrypted": True}), "O16N_LDAP_QUERY_PASSWORD_FILE"),
        ("{not json", "is not JSON"),
    ],
)
def test_serve_with_a_bad_appsettings_exits_with_the_message(
    tmp_path: Path, document: Any, named: str
) -> None:
    settings = settings_for(tmp_path, document)
    done = serve(tmp_path, O16N_APPSETTINGS=str(settings.appsettings))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr and done.stderr.startswith("o16n: ")
    assert "Traceback" not in done.stderr + done.stdout
    assert "query-secret-1" not in done.stderr + done.stdout


def test_serve_with_a_missing_appsettings_exits_with_the_message(tmp_path: Path) -> None:
    done = serve(tmp_path, O16N_APPSETTINGS=str(tmp_path / "absent.json"))
    assert done.returncode == 2 and "absent.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_start_and_the_app_share_one_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``o16n serve`` checks the file, the app factory takes that result: warned once."""
    caplog.set_level(logging.WARNING)
    settings = settings_for(tmp_path, ml_file(LDAP={"SkipCertificateValidation": True}))
    first = appsettings.configured(settings)
    assert appsettings.configured(settings) is first
    assert len(warnings(caplog)) == 1


def test_a_secret_of_the_wrong_type_is_named_not_shown(tmp_path: Path) -> None:
    message = refused(tmp_path, ml_file(LDAP={"QueryUserPassword": 31415926535}))
    assert "Authentication.LDAP.QueryUserPassword" in message and "31415926535" not in message
    aad = ml_file(
        LDAP={"Enabled": False},
        AzureActiveDirectory={"Enabled": True, "Key": 27182818284, "KeyEncrypted": False},
    )
    message = refused(tmp_path, aad)
    assert "Authentication.AzureActiveDirectory.Key" in message and "27182818284" not in message


@pytest.mark.parametrize("port", ["\u00b2", "\u0666\u0663\u0666", "6 36", "0x27c"])
def test_a_port_of_unicode_or_other_digits_is_named(tmp_path: Path, port: str) -> None:
    """Only ASCII digits: ``str.isdigit`` alone let ``²`` through to ``int()``, whose
    ValueError escaped without the key's name."""
    assert "Authentication.LDAP.Port" in refused(tmp_path, ml_file(LDAP={"Port": port}))


def _recased(value: Any) -> Any:
    """``value`` with every key in another case (ML Server's .NET configuration ignores it)."""
    if isinstance(value, dict):
        return {
            (k.lower() if i % 2 else k.upper()): _recased(v)
            for i, (k, v) in enumerate(value.items())
        }
    return value


def test_key_names_are_case_insensitive_as_in_ml_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ASP.NET Core's configuration compares keys case-insensitively, so ML Server took
    ``"useLdaps"`` or ``"authentication"``; o16n read such a file as no directory at all."""
    caplog.set_level(logging.WARNING)
    recased = _recased(ML_SERVER_FILE)
    assert "AUTHENTICATION" in recased or "authentication" in recased
    assert load(tmp_path, recased) == load(tmp_path, ML_SERVER_FILE)
    assert warnings(caplog) == []
    twice = ml_file(LDAP={"host": "dc2.test.com"})
    assert "Authentication.LDAP.Host" in refused(tmp_path, twice)


def test_a_secret_in_the_file_is_taken_as_written(tmp_path: Path) -> None:
    """Spaces at either end belong to the password (ML Server binds with the string as
    written): trimmed, the bind would fail as a wrong password nobody can see."""
    config = load(tmp_path, ml_file(LDAP={"QueryUserPassword": " pass word "}))
    assert config.ldap is not None
    assert config.ldap.query_user_password.get_secret_value() == " pass word "
    aad = {"Enabled": True, "KeyEncrypted": False, "Key": "\tkey "}
    config = load(tmp_path, ml_file(LDAP={"Enabled": False}, AzureActiveDirectory=aad))
    assert config.aad is not None and config.aad.key is not None
    assert config.aad.key.get_secret_value() == "\tkey "


def test_an_ldap_ca_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    """libldap reads it only at the first connection: unchecked, a typo would start the
    server and fail every LDAP login (with a bare "option error" from python-ldap)."""
    message = refused(tmp_path, ml_file(), ldap_ca_file=tmp_path / "missing.pem")
    assert "O16N_LDAP_CA_FILE" in message and "missing.pem" in message
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    assert "O16N_LDAP_CA_FILE" in refused(tmp_path, ml_file(), ldap_ca_file=not_pem)


def test_an_oidc_ca_file_that_cannot_be_read_stops_serve_before_it_starts(
    tmp_path: Path,
) -> None:
    """Found only when the app started, it left ``o16n serve`` printing the message with
    its store open and the process still running: the check belongs with the others."""
    aad = ml_file(
        LDAP={"Enabled": False},
        AzureActiveDirectory={"Enabled": True, "Key": "", "KeyEncrypted": False},
    )
    missing = tmp_path / "missing-ca.pem"
    message = refused(tmp_path, aad, oidc_ca_file=missing)
    assert "O16N_OIDC_CA_FILE" in message and "missing-ca.pem" in message
    settings = settings_for(tmp_path, aad)
    done = serve(
        tmp_path, O16N_APPSETTINGS=str(settings.appsettings), O16N_OIDC_CA_FILE=str(missing)
    )
    assert done.returncode == 2 and "O16N_OIDC_CA_FILE" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started
