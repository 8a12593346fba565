"""An Azure AD look-alike on 127.0.0.1: OpenID discovery, a JWKS, and tokens it mints.

It signs with keys of its own through PyJWT, a JOSE library other than the verifier's
(python-jose), so the two check each other. It runs an ``http.server`` in a thread of its
own, never on the test's event loop, so the controller's client sees a real server.

    with OidcProvider() as idp:                 # or the ``oidc_provider`` fixture
        idp.authority                           # "http://127.0.0.1:<port>/<tenant>" (Authority)
        idp.appsettings(owner=["<group id>"])   # ML Server's Authentication/Authorization dict
        token = idp.token("alice@contoso.example", groups=["<group id>"])   # Azure AD v1-like
        idp.token(..., alg="ES256")             # signed by its EC key (default RS256)
        idp.token(..., overage=True)            # groups left out: _claim_names (or "hasgroups")
        idp.token(..., lifetime=-120, not_before=..., audience=..., issuer=..., forged=True)
        idp.rotate()                            # new RSA key and kid; the old one leaves the JWKS
        idp.down(); idp.up()                    # refuse connections, or down("503"): 503s
        idp.jwks_fetches, idp.discovery_fetches # how often each was served
    OidcProvider(tls=True)                      # https, its own CA in .ca_file

Tokens carry the claims of Azure AD's v1 access tokens (``aud``, ``iss`` =
``https://sts.windows.net/<tenant>/`` as the discovery document says, ``oid``, ``upn``,
``unique_name``, ``name``, ``groups``, ``tid``, ``iat``, ``nbf``, ``exp``, ...).
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from controller.auth.appsettings import AadConfig
from tests.tls_certs import make_ca, server_certificate

#: The Audience of the app registration the tokens are for (ML Server's "Audience").
AUDIENCE = "https://o16n.contoso.example/api"
#: The client (Microsoft's SDK's app registration) the tokens are issued to.
CLIENT_ID = "8a3c9b7e-0f11-4c53-9d2e-6c1d2b0a7f41"
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _new_key(kty: str, alg: str = "ES256") -> PrivateKey:
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(_EC_CURVES[alg])


class OidcProvider:
    """An identity provider the tests start and stop; see the module's docstring."""

    def __init__(
        self, *, tenant: str | None = None, audience: str = AUDIENCE, tls: bool = False
    ) -> None:
        self.tenant = tenant or str(uuid.uuid4())
        self.audience = audience
        self.issuer = f"https://sts.windows.net/{self.tenant}/"
        #: seconds every answer waits before it is written (to make requests overlap)
        self.delay = 0.0
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, PrivateKey]] = {}
        self._generation = 0
        self.rotate("RSA")
        self.rotate("EC")
        #: served instead of the JWKS when set
        self.jwks_override: dict[str, Any] | None = None
        #: served as the JWKS's body, as it is, when set (what ``json.dumps`` cannot make)
        self.jwks_raw: bytes | None = None
        #: members of the discovery document that replace its own
        self.discovery_override: dict[str, Any] = {}
        self._unavailable = False
        self._huge: tuple[int, bool] | None = None
        self._huge_sent = 0
        self._huge_done = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        #: with ``tls``: the CA (PEM) that signed its certificate (O16N_OIDC_CA_FILE)
        self.ca_file: Path | None = None
        self._tls: ssl.SSLContext | None = None
        self._scratch: Path | None = None
        if tls:
            self._scratch = Path(tempfile.mkdtemp(prefix="o16n-idp-"))
            self._tls, self.ca_file = _tls_files(self._scratch)

    # --- life -------------------------------------------------------------------------------

    def start(self) -> OidcProvider:
        self._serve()
        return self

    def stop(self) -> None:
        self._halt()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _halt(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def down(self, mode: Literal["refuse", "503"] = "refuse") -> None:
        """Unreachable: connections refused (the port closed), or every answer a 503."""
        if mode == "503":
            self._unavailable = True
        else:
            self._halt()

    def up(self) -> None:
        self._unavailable = False
        if self._server is None:
            self._serve()

    def _serve(self) -> None:
        provider = self

        class Handler(_Handler):
            idp = provider

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # --- what the controller is told --------------------------------------------------------

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        """ML Server's ``Authority``: discovery is at ``<authority>/.well-known/...``."""
        return f"{self.base_url}/{self.tenant}"

    def appsettings(
        self,
        *,
        owner: Iterable[str] = (),
        contributor: Iterable[str] = (),
        reader: Iterable[str] = (),
        cache_minutes: int = 60,
    ) -> dict[str, Any]:
        """ML Server's ``appsettings.json`` sections for this provider, as its files write
        them (``"True"``; group names are Azure AD object ids)."""
        return {
            "Authentication": {
                "AzureActiveDirectory": {
                    "Enabled": "True",
                    "Authority": self.authority,
                    "Audience": self.audience,
                    "ClientId": CLIENT_ID,
                    "Key": "",
                    "KeyEncrypted": "False",
                },
            },
            "Authorization": {
                "Owner": list(owner),
                "Contributor": list(contributor),
                "Reader": list(reader),
                "CacheLifeTimeInMinutes": str(cache_minutes),
            },
        }

    def aad_config(self, *, jwks_cooldown: float = 60.0, leeway: float = 60.0) -> AadConfig:
        """The verifier's configuration for this provider, without an appsettings file."""
        return AadConfig(
            authority=self.authority,
            audience=self.audience,
            client_id=CLIENT_ID,
            key=None,
            ca_file=self.ca_file,
            jwks_cooldown=jwks_cooldown,
            leeway=leeway,
        )

    # --- keys and tokens --------------------------------------------------------------------

    def rotate(self, kty: Literal["RSA", "EC"] = "RSA") -> str:
        """A new key (and ``kid``) of that type; the old one leaves the JWKS. Its kid."""
        with self._lock:
            self._generation += 1
            kid = f"{kty.lower()}-{self._generation}-{uuid.uuid4().hex[:8]}"
            self._keys[kty] = (kid, _new_key(kty))
        return kid

    def kid(self, kty: Literal["RSA", "EC"] = "RSA") -> str:
        return self._keys[kty][0]

    def public_pem(self, kty: Literal["RSA", "EC"] = "RSA") -> bytes:
        return (
            self._keys[kty][1]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwks(self) -> dict[str, Any]:
        """The JWKS as Azure AD serves it (``kty``, ``use``, ``kid``, no ``alg``)."""
        keys = []
        for _, (kid, key) in sorted(self._keys.items()):
            if isinstance(key, rsa.RSAPrivateKey):
                public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            else:
                public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            public.pop("key_ops", None)
            keys.append({**public, "use": "sig", "kid": kid})
        return {"keys": keys}

    def claims(
        self,
        username: str = "alice@contoso.example",
        *,
        groups: Sequence[str] | None = (),
        display_name: str | None = None,
        lifetime: float = 3600,
        not_before: float | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        overage: bool | Literal["hasgroups"] = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims of an Azure AD v1 access token for ``username``. ``overage``: no
        ``groups`` but ``_claim_names``/``_claim_sources`` (or ``hasgroups: true``), as
        Azure AD does for a user in too many groups. ``extra``: more claims, or other
        values; ``None`` leaves a claim out."""
        now = int(time.time())
        local = username.split("@", 1)[0]
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.tenant}/{username}"))
        claims: dict[str, Any] = {
            "aud": audience or self.audience,
            "iss": issuer or self.issuer,
            "iat": now,
            "nbf": int(not_before) if not_before is not None else now,
            "exp": int(now + lifetime),
            "acr": "1",
            "aio": uuid.uuid4().hex,
            "amr": ["pwd"],
            "appid": CLIENT_ID,
            "appidacr": "0",
            "family_name": "Example",
            "given_name": local.title(),
            "ipaddr": "127.0.0.1",
            "name": display_name or f"{local.title()} Example",
            "oid": oid,
            "scp": "user_impersonation",
            "sub": uuid.uuid5(uuid.NAMESPACE_OID, oid).hex,
            "tid": self.tenant,
            "unique_name": username,
            "upn": username,
            "uti": uuid.uuid4().hex[:22],
            "ver": "1.0",
        }
        if overage == "hasgroups":
            claims["hasgroups"] = True
        elif overage:
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {
                    "endpoint": f"https://graph.windows.net/{self.tenant}/users/{oid}"
                    "/getMemberObjects"
                }
            }
        elif groups is not None:
            claims["groups"] = list(groups)
        claims.update(extra)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        username: str = "alice@contoso.example",
        *,
        alg: str = "RS256",
        kid: str | None = None,
        forged: bool = False,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token (claims as :meth:`claims` takes them). ``forged``: signed
        by a key the provider never published, under its current ``kid``; ``kid``: that
        header instead of the key's own; ``headers``: more header parameters."""
        kty: Literal["RSA", "EC"] = "RSA" if alg.startswith(("RS", "PS")) else "EC"
        own_kid, key = self._keys[kty]
        if forged or (kty == "EC" and alg != "ES256"):  # its EC key is on P-256
            key = _new_key(kty, alg)
            key = _new_key(kty, alg)
        header: dict[str, Any] = {"kid": kid or own_kid}
        if kty == "RSA":
            header["x5t"] = header["kid"]
        header.update(headers or {})
        return jwt.encode(self.claims(username, **claims), key, algorithm=alg, headers=header)

    # --- misbehaving ------------------------------------------------------------------------

    def serve_huge_jwks(self, size: int, *, declare_length: bool = False) -> None:
        """Answer the next JWKS requests with ``size`` bytes, streamed without a length
        (or declaring it)."""
        self._huge_done.clear()
        self._huge_sent = 0
        self._huge = (size, declare_length)

    def huge_bytes_sent(self, timeout: float = 10.0) -> int:
        """Bytes of the huge JWKS written before the client hung up (waits for the end)."""
        self._huge_done.wait(timeout)
        return self._huge_sent

    def _count(self, what: str) -> None:
        with self._lock:
            if what == "jwks":
                self.jwks_fetches += 1
            else:
                self.discovery_fetches += 1


def _tls_files(scratch: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA of its own, and a certificate for 127.0.0.1 it signed: the server's context
    and the CA's file (what O16N_OIDC_CA_FILE names)."""
    ca_file, ca_key, ca_cert = make_ca(scratch, "o16n-test-identity-ca")
    cert, key = server_certificate(scratch, ca_key, ca_cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, ca_file


class _Handler(BaseHTTPRequestHandler):
    idp: OidcProvider

    def do_GET(self) -> None:
        idp = self.idp
        if idp.delay:
            time.sleep(idp.delay)
        if idp._unavailable:
            self._json(503, {"error": "temporarily_unavailable"})
        elif self.path == f"/{idp.tenant}/.well-known/openid-configuration":
            idp._count("discovery")
            self._json(200, self._discovery())
        elif self.path == "/common/discovery/keys":
            idp._count("jwks")
            if idp._huge is not None:
                self._huge(*idp._huge)
            elif idp.jwks_raw is not None:
                self._send(200, idp.jwks_raw)
            elif idp.jwks_override is not None:
                self._json(200, idp.jwks_override)
            else:
                self._json(200, idp.jwks())
        else:
            self._json(404, {"error": "not_found"})

    def _discovery(self) -> dict[str, Any]:
        idp = self.idp
        return {
            "authorization_endpoint": f"{idp.authority}/oauth2/authorize",
            "token_endpoint": f"{idp.authority}/oauth2/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": f"{idp.base_url}/common/discovery/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "scopes_supported": ["openid"],
            "issuer": idp.issuer,
            "microsoft_multi_refresh_token": True,
            "end_session_endpoint": f"{idp.authority}/oauth2/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            **idp.discovery_override,
        }

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode())

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _huge(self, size: int, declare_length: bool) -> None:
        idp = self.idp
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declare_length:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b" " * (64 * 1024)
        try:
            while idp._huge_sent < size:
                self.wfile.write(chunk)
                idp._huge_sent += len(chunk)
        except OSError:
            self.close_connection = True
        finally:
            idp._huge_done.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the counters, not a log."""
