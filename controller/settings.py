"""One frozen settings object, read from ``O16N_*`` environment variables.

Nothing reads the environment at import time: ``Settings.from_env()`` is called by the
CLI and the result handed to ``create_app``. Every field is documented in the README's
configuration table (a test keeps the two in step). Secrets are ``SecretStr`` so they are
masked in logs and reprs.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from controller.runtime.nodes import NodeAddress, NodeAddressError, parse_node

ENV_PREFIX = "O16N_"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container's cpuset limits
    it), the machine's count where that cannot be read."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, ::1"`` → networks; ``ValueError`` naming a bad entry."""
    networks = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"'{item}' is not an IP address or CIDR network") from None
    return tuple(networks)


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def parse_node_list(text: str) -> list[NodeAddress]:
    """``"ssh://a@h1, unix:///s.sock"`` (commas or whitespace between entries) → node
    addresses, duplicates dropped, in order; ``ValueError`` naming a bad entry."""
    nodes: dict[str, NodeAddress] = {}
    for item in text.replace(",", " ").split():
        try:
            node = parse_node(item)
        except NodeAddressError as exc:
            named = str(exc) if repr(item) in str(exc) else f"{item[:100]!r}: {exc}"
            raise ValueError(named) from None
        nodes.setdefault(node.entry, node)
    return list(nodes.values())


#: The shortest ``O16N_METRICS_TOKEN`` accepted: a guessable one would open ``/metrics``.
METRICS_TOKEN_MIN = 16


def env_or_file_secret(
    from_env: SecretStr | None, from_file: Path | None, env_name: str
) -> SecretStr | None:
    """A secret given in ``<env_name>`` or in the file ``<env_name>_FILE`` names (its
    trailing newline dropped), or ``None`` for neither; ``SettingsError`` for both, an
    unreadable file or an empty one."""
    if from_env is not None and from_file is not None:
        raise SettingsError(f"{env_name} and {env_name}_FILE are both set; give one")
    if from_file is None:
        return from_env
    try:
        text = from_file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{env_name}_FILE: cannot read {from_file}: {exc}") from None
    if not text:
        raise SettingsError(f"{env_name}_FILE: {from_file} is empty")
    return SecretStr(text)


def check_metrics_token(text: str) -> str:
    """``text`` if it is long enough to be a metrics token, else ``ValueError``."""
    if len(text) < METRICS_TOKEN_MIN:
        raise ValueError(f"a metrics token must be {METRICS_TOKEN_MIN} characters at least")
    return text


class Settings(BaseModel):
    """Configuration of one controller process. Field ``x`` is set by ``O16N_X``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- HTTP -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(12800, ge=0, le=65535, description="HTTP port (ML Server's port).")
    max_body_bytes: ByteSize = Field(
        ByteSize(256 * 1024**2), description="Largest request body accepted (413 above)."
    )
    max_anonymous_body_bytes: ByteSize = Field(
        ByteSize(32 * 1024),
        description="Largest body of a request that needs no token (`/login`; 413 above).",
    )
    http_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a connection may sit idle, or take to send a request's headers, "
        "before it is closed.",
    )
    http_body_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request body may send nothing while the controller waits for it "
        "(408, and the connection is closed).",
    )

    # --- a group of controllers sharing one database (docs/web-nodes.md) ------------------
    internal_url: str | None = Field(
        None,
        description="Where the other controllers of the group reach this one (`http://host:port`); "
        "unset: http://<host>:<port> (this machine's name if host is a wildcard address).",
    )
    lease_seconds: float = Field(
        10.0,
        ge=3,
        le=300,
        description="Seconds a controller counts as alive after its last heartbeat (sent every "
        "third of it), and that a group-wide job's lease lasts.",
    )

    # --- storage ------------------------------------------------------------------------
    data_dir: Path = Field(
        Path("./data"),
        description="This controller's own files: the database (SQLite), agents' sockets, "
        "the agent bundle, upload spool.",
    )
    shared_dir: Path = Field(
        None,  # filled in by ``_default_shared_dir``
        validate_default=True,
        description="Files every controller of a group reads (snapshot and service "
        "workspace archives, the generated jwt-secret and admin-password); absolute; "
        "unset: data_dir. Several controllers: the same directory (NFS, say) for all.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="`postgresql://user:password@host:port/database`: the store on PostgreSQL, "
        "shared by a group of controllers (docs/web-nodes.md); unset: SQLite in data_dir.",
    )
    database_pool_size: int = Field(
        8, ge=1, le=100, description="Most connections to PostgreSQL one controller holds."
    )
    disk_fail_bytes: ByteSize = Field(
        ByteSize(256 * 1024**2),
        description="Free space under data_dir (and shared_dir) below which /status reports "
        "the disk `fail`.",
    )
    disk_warn_bytes: ByteSize = Field(
        ByteSize(2 * 1024**3),
        description="Free space under data_dir (and shared_dir) below which /status reports "
        "the disk `warn`.",
    )
    status_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Seconds /status reuses its checks (the engine's and the runtime image's "
        "up to 2 s more): a failure shows within that bound; requests that find them older "
        "share one new check.",
    )

    # --- authentication -------------------------------------------------------------------
    admin_password: SecretStr | None = Field(
        None,
        description="Password of `admin` on first start; unset: one is generated and written "
        "to <shared_dir>/admin-password (0600).",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 signing key; unset: generated once into <shared_dir>/jwt-secret "
        "(by whichever controller of a group starts first).",
    )
    access_token_ttl: int = Field(3600, ge=60, description="Access-token lifetime, seconds.")
    refresh_token_idle_ttl: int = Field(
        14 * 86400, ge=60, description="A refresh token dies after this many seconds unused."
    )
    refresh_chain_max_age: int = Field(
        90 * 86400, ge=60, description="A refresh chain ends this many seconds after its login."
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins of one user name from one address (or one device) before "
        "429 (those being checked count too).",
    )
    login_failure_window: int = Field(
        300, ge=1, description="Seconds over which failed logins are counted."
    )
    login_max_failures_per_address: int = Field(
        30,
        ge=1,
        description="Failed logins from one address (any user) after which the names that "
        "failed there get 429 from it.",
    )
    login_max_failures_per_user: int = Field(
        20,
        ge=1,
        description="Failed logins of one user name (any address) after which the addresses "
        "it failed from get 429 for it.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is "
        "believed (the rightmost untrusted hop); from anyone else it is ignored.",
    )

    # --- directories (ML Server's appsettings.json: controller.auth.appsettings) -------------
    appsettings: Path | None = Field(
        None,
        description="ML Server's appsettings.json: its Authentication (LDAP or Azure AD) and "
        "Authorization sections are used; unset: local accounts only.",
    )
    local_accounts: bool = Field(
        False,
        description="Keep local accounts usable while a directory is enabled (break-glass); "
        "without a directory they always are.",
    )
    ldap_query_password: SecretStr | None = Field(
        None, description="Password of LDAP's QueryUserDn (instead of the file's)."
    )
    ldap_query_password_file: Path | None = Field(
        None, description="A file holding that password (instead of the file's)."
    )
    ldap_starttls: bool | None = Field(
        None,
        description="Upgrade ldap:// with StartTLS; unset: on unless UseLDAPS is True.",
    )
    ldap_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) that verify the LDAP server; unset: the system's."
    )
    ldap_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds to connect to LDAP, and for each operation."
    )
    aad_key: SecretStr | None = Field(
        None, description="Azure AD's Key (client secret), instead of the file's."
    )
    aad_key_file: Path | None = Field(
        None, description="A file holding Azure AD's Key (instead of the file's)."
    )
    oidc_ca_file: Path | None = Field(
        None,
        description="CA certificates (PEM) that verify the identity provider's https; unset: "
        "the system's.",
    )
    oidc_jwks_cooldown: float = Field(
        60.0,
        ge=0,
        description="Seconds between two fetches of the provider's keys that an unknown key "
        "id may cause.",
    )
    oidc_leeway: float = Field(
        60.0, ge=0, le=600, description="Seconds of clock skew allowed on a token's exp and nbf."
    )

    audit_retention_days: int = Field(
        365, ge=1, description="Days audit-trail entries are kept (purged hourly)."
    )

    # --- logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["json", "text"] = Field("json", description="json lines or plain text.")
    access_log: bool = Field(True, description="Log one line per HTTP request.")
    server_timing: bool = Field(
        True,
        description="Send `Server-Timing` (per-phase durations) on consume, execute and "
        "session-create responses (`on` or `off`).",
    )

    # --- runtime containers ---------------------------------------------------------------
    engine: str = Field(
        "docker",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Where containers run: the name of an engine (controller.runtime.engines).",
    )
    runtime_image: str | None = Field(
        None, description="Runtime image; unset: o16n-runtime:<hash of runtime_image/>."
    )
    instance: str = Field(
        "o16n",
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="Label value naming this controller's containers (adopt/reap scope).",
    )
    docker_workers: int = Field(8, ge=1, description="Threads for ordinary Docker API calls.")
    docker_slow_workers: int = Field(
        2, ge=1, description="Threads for slow Docker calls (commit, build)."
    )
    container_user: str = Field(
        "1000:1000", pattern=r"^\d+:\d+$", description="Numeric uid:gid code runs as."
    )
    container_network: str = Field("none", description="Docker network mode of containers.")
    container_read_only: bool = Field(True, description="Read-only root filesystem.")
    container_memory: ByteSize = Field(ByteSize(2 * 1024**3), description="Memory limit.")
    container_cpus: float = Field(1.0, gt=0, description="CPU limit (cores).")
    container_pids: int = Field(256, ge=16, description="Process/thread limit.")
    container_nofile: int = Field(1024, ge=64, description="Open-file limit.")
    container_fsize: ByteSize = Field(
        ByteSize(1024**3), description="Largest file a process may write."
    )
    container_work_size: ByteSize = Field(
        ByteSize(1024**3), description="tmpfs size of the working directory."
    )
    container_tmp_size: ByteSize = Field(ByteSize(256 * 1024**2), description="tmpfs size of /tmp.")
    agent_connect_timeout: float = Field(
        30.0, gt=0, description="Seconds a new container's agent has to dial in."
    )
    agent_reply_max_bytes: ByteSize = Field(
        ByteSize(64 * 1024**2), description="Largest JSON reply accepted from an agent."
    )
    agent_blob_max_bytes: ByteSize = Field(
        ByteSize(2 * 1024**3),
        description="Ceiling on one binary payload from an agent; each operation's own limit "
        "is lower (a file: the file-size limit; an object or snapshot: the memory limit; "
        "other operations: none).",
    )

    # --- compute nodes (controller.runtime.nodes; /computenodes) ---------------------------
    # Declared before compute_nodes, whose check reads ssh_known_hosts.
    ssh_key: Path | None = Field(
        None,
        description="Private key the controller signs in to ssh:// compute nodes with; unset: "
        "generated once into <data_dir>/ssh/id_ed25519 (0600), its public key shown by "
        "`GET /admin/nodes`.",
    )
    ssh_known_hosts: Path | None = Field(
        None,
        description="known_hosts file pinning the ssh:// compute nodes' host keys (no key is "
        "ever accepted on first use); required when an ssh:// node is configured.",
    )
    compute_nodes: str = Field(
        "",
        description="Compute nodes besides the local engine, separated by commas or spaces: "
        "unix:///path/docker.sock or ssh://user@host[:port]. Set: replaces the stored list "
        "(`/computenodes`) at each start; unset: the stored list is kept.",
    )
    node_dir: Path = Field(
        Path("/var/lib/o16n-node"),
        description="Directory on each ssh:// compute node for this controller's agent bundle "
        "and sockets (absolute).",
    )
    node_probe_seconds: float = Field(
        2.0, ge=0.2, le=60, description="Seconds between two probes of each compute node."
    )

    # --- sessions -----------------------------------------------------------------------
    sessions_per_user: int = Field(
        10, ge=1, description="Live sessions one user may hold (429 above)."
    )
    session_idle_timeout: int = Field(
        3600, ge=10, description="Seconds without a call after which a session is closed."
    )
    execute_timeout: int = Field(
        600, ge=1, description="Seconds one execution may run before it is interrupted."
    )
    session_busy_wait: float = Field(
        30.0,
        ge=0,
        description="Seconds a call waits for a running execution (then 409).",
    )
    warm_pool_size: int = Field(
        2, ge=0, description="Pre-started runtime containers waiting for new sessions."
    )
    console_output_max: int = Field(
        1 << 20, ge=1024, description="Characters of console output kept per execution."
    )
    adopt_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds a session's agent has to reconnect after a restart.",
    )

    # --- web services -------------------------------------------------------------------
    service_warm_pool_size: int = Field(
        2,
        ge=0,
        description="Pre-started containers, modules preloaded, for new service containers.",
    )
    service_preload: str = Field(
        "numpy,pandas,scipy.stats,sklearn.base,sklearn.utils,sklearn.svm,sklearn.linear_model,"
        "sklearn.ensemble,sklearn.tree,sklearn.neighbors,sklearn.pipeline,sklearn.preprocessing,"
        "dill",
        description="Modules those containers import while they wait (comma-separated).",
    )
    service_pool_initial: int = Field(
        1, ge=0, description="Warm containers per service version (InitialPoolSize default)."
    )
    service_pool_max: int = Field(
        default_factory=lambda: max(4, usable_cores()),
        ge=1,
        description="Containers per service version at most (MaxPoolSize default; "
        "4, or the cores this process may use if more).",
    )
    service_pool_limit: int = Field(
        default_factory=lambda: max(32, 2 * usable_cores()),
        ge=1,
        description="Largest MaxPoolSize a pool request may ask for (32, or twice the "
        "cores if more).",
    )
    service_pool_idle: int = Field(
        300, ge=1, description="Seconds an extra idle service container lives before removal."
    )
    service_queue_max: int = Field(
        256, ge=0, description="Requests that may wait for a busy service (503 above)."
    )
    service_queue_wait: float = Field(
        30.0, gt=0, description="Seconds a request waits for a free container (then 503)."
    )
    consume_timeout: int = Field(
        120, ge=1, description="Seconds one consume request may run before it is interrupted."
    )
    service_init_timeout: int = Field(
        600, ge=1, description="Seconds a service container has to restore and run initCode."
    )

    # --- realtime services (controller.services.realtime) ---------------------------------
    realtime_model_max: ByteSize = Field(
        ByteSize(256 * 1024**2),
        description="Largest model a realtime service may publish (413 above).",
    )
    realtime_prepare_timeout: int = Field(
        300,
        ge=1,
        description="Seconds the single-use container has to check (and convert) a model.",
    )

    # --- batch consumption --------------------------------------------------------------
    batch_max_parallel: int = Field(
        16, ge=1, description="Largest parallelCount of a batch (MaxNumberOfThreadsPerBatch)."
    )
    batch_max_items: int = Field(100_000, ge=1, description="Records one batch may hold.")

    # --- metrics (controller.metrics) ------------------------------------------------------
    metrics: bool = Field(
        True,
        description="`on`: Prometheus metrics at `GET /metrics`; `off`: no HTTP metrics "
        "middleware and `/metrics` answers 404.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="A bearer token (16 characters at least) that may read `/metrics` "
        "besides an Owner's (Prometheus' `authorization` setting).",
    )
    metrics_token_file: Path | None = Field(
        None, description="A file holding that token (instead of `O16N_METRICS_TOKEN`)."
    )

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_metrics_token(value.get_secret_value())
        return value

    @field_validator("internal_url")
    @classmethod
    def _check_internal_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("the internal URL must be http(s)://host[:port]")
        if url.path not in ("", "/") or url.query or url.fragment or url.username:
            raise ValueError("the internal URL names a host and port only, no path or user")
        url.port  # noqa: B018 (a bad port raises ValueError here)
        return value.rstrip("/")

    @field_validator("compute_nodes")
    @classmethod
    def _check_compute_nodes(cls, value: str, info: ValidationInfo) -> str:
        nodes = parse_node_list(value)
        if any(n.scheme == "ssh" for n in nodes) and info.data.get("ssh_known_hosts") is None:
            raise ValueError(
                "ssh:// compute nodes need O16N_SSH_KNOWN_HOSTS (their pinned host keys)"
            )
        return value

    @field_validator("node_dir")
    @classmethod
    def _check_node_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("the node directory must be an absolute path")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().partition("://")[0]
            if scheme not in ("postgresql", "postgres"):
                raise ValueError("the database URL must be postgresql://… (unset: SQLite)")
        return value

    @field_validator("shared_dir", mode="before")
    @classmethod
    def _default_shared_dir(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return info.data.get("data_dir", Path("./data"))
        if not Path(value).is_absolute():
            raise ValueError("the shared directory must be an absolute path")
        return value

    @property
    def shared_with_others(self) -> bool:
        """Whether ``shared_dir`` is a directory of its own (not ``data_dir``): then other
        controllers may be writing in it at any moment, so clean-ups there never assume
        that nothing is half-written."""
        return self.shared_dir.absolute() != self.data_dir.absolute()

    @functools.cached_property
    def compute_node_list(self) -> list[NodeAddress]:
        """``compute_nodes`` parsed (in order, duplicates dropped)."""
        return parse_node_list(self.compute_nodes)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @functools.cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        """Parsed once: the access log and every login ask for it."""
        return parse_networks(self.trusted_proxies)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "o16n.sqlite3"

    @property
    def sockets_dir(self) -> Path:
        """Where the agents' sockets are, absolute even when ``data_dir`` is relative (its
        default): Docker takes only an absolute bind mount source, and an agent endpoint
        names an absolute path."""
        return self.data_dir.absolute() / "sockets"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``O16N_*`` variables; ``overrides`` win (tests use them)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise SettingsError(f"invalid configuration: {problems}") from None

    def describe(self) -> dict[str, Any]:
        """Settings as plain values with secrets masked, for the start-up log."""
        return {
            name: (
                "***" if isinstance(value, SecretStr) else str(value) if value is not None else None
            )
            for name, value in self
        }


#: The settings the app was built with.
SETTINGS = web.AppKey("settings", Settings)
