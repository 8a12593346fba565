"""The app factory: the one place that wires o16n together.

``create_app(settings)`` builds the aiohttp application; nothing opens SQLite, makes a
Docker client or reads the environment at import time. Each shared resource has one
cleanup context that pairs its start with its teardown, entered in dependency order
(store → auth → engine → runtime) and left in reverse; the task supervisor's
context is registered last so that background tasks are cancelled first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvloop
from aiohttp import web

from controller import docs, status
from controller.admin import routes as admin_routes
from controller.audit.log import AUDIT, AuditLog
from controller.auth import appsettings
from controller.auth import routes as auth_routes
from controller.auth.bootstrap import ensure_admin, jwt_secret
from controller.auth.directory import Directory
from controller.auth.jwt_tokens import AccessTokenCodec
from controller.auth.ldap_accounts import LdapAccounts
from controller.auth.ldap_login import LdapSignIn
from controller.auth.middleware import auth_middleware
from controller.auth.oidc import OidcVerifier
from controller.auth.oidc_login import OidcSignIn
from controller.auth.service import AUTH, BAD_CREDENTIALS, AuthService
from controller.batch import routes as batch_routes
from controller.batch import swagger as batch_swagger
from controller.batch.runner import BATCHES, BatchRunner
from controller.computenodes import routes as compute_node_routes
from controller.computenodes.registry import compute_nodes_ctx
from controller.docs import SWAGGER
from controller.drain import DRAIN, Drain, make_middleware
from controller.group.membership import BATCHES as BATCHES_LEASE
from controller.group.membership import MEMBERSHIP, PURGES, Membership, internal_url
from controller.health import PROBE, HealthProbe
from controller.http.body_limits import body_limit_middleware, with_expect_continue
from controller.http.middlewares import (
    add_response_headers,
    error_middleware,
    request_id_middleware,
)
from controller.http.server_timing import server_timing_middleware
from controller.limits import limits_ctx
from controller.metrics import routes as metrics_routes
from controller.metrics.http import metrics_middleware
from controller.runtime import agent_bundle, engines
from controller.runtime.engines import ENGINE
from controller.runtime.sandbox import Sandbox
from controller.runtime.sandboxes import SANDBOXES, Sandboxes
from controller.runtime.warm_pool import WARM_POOLS, WarmPool
from controller.services import routes as service_routes
from controller.services.registry import SERVICES, ServiceRegistry
from controller.sessions import routes as session_routes
from controller.sessions.forwarding import forwarding_ctx, forwarding_middleware
from controller.sessions.manager import SESSIONS, SessionManager
from controller.settings import SETTINGS, Settings
from controller.snapshots import archives
from controller.snapshots import routes as snapshot_routes
from controller.snapshots.manager import SNAPSHOTS, SnapshotManager
from controller.snapshots.manager import SWEEP_AGE as SNAPSHOT_SWEEP_AGE
from controller.store.audit import AuditRepo
from controller.store.batches import BatchesRepo
from controller.store.db import DB, open_database
from controller.store.group import GroupRepo
from controller.store.services import ServicesRepo
from controller.store.sessions import SessionsRepo
from controller.store.snapshots import SnapshotsRepo
from controller.tasks import TASKS, TaskSupervisor

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 300.0  # seconds between sweeps of what failed removals and crashes left


def create_app(settings: Settings) -> web.Application:
    engines.factory(settings)  # an unknown engine stops the start here, not half-way
    drain = Drain()
    timing = [server_timing_middleware] if settings.server_timing else []
    app = web.Application(
        middlewares=[
            request_id_middleware,
            *timing,
            error_middleware,
            auth_middleware,
            body_limit_middleware,
            make_middleware(drain),
            forwarding_middleware,  # after authentication: only the caller's sessions go on
        ],
        client_max_size=int(settings.max_body_bytes),
        # An idle connection, or one still sending its request's headers, is closed after
        # this long (aiohttp arms the same timer for both).
        handler_args={"keepalive_timeout": settings.http_idle_timeout},
    )
    if settings.metrics:  # outermost: it sees the status the client gets
        app.middlewares.insert(0, metrics_middleware)
    app.on_response_prepare.append(add_response_headers)
    app[SETTINGS] = settings
    app[DRAIN] = drain
    app[TASKS] = TaskSupervisor()
    app[SWAGGER] = docs.load_document()
    app[WARM_POOLS] = []

    app.router.add_routes(with_expect_continue(auth_routes.routes))
    app.router.add_routes(with_expect_continue(status.routes))
    app.router.add_routes(with_expect_continue(compute_node_routes.routes))
    app.router.add_routes(with_expect_continue(docs.routes))

    app.router.add_routes(with_expect_continue(session_routes.routes))
    app.router.add_routes(with_expect_continue(snapshot_routes.routes))
    app.router.add_routes(with_expect_continue(service_routes.routes))
    app.router.add_routes(with_expect_continue(batch_routes.routes))
    app.router.add_routes(with_expect_continue(admin_routes.routes))
    if settings.metrics:  # a bad metrics token stops the start here
        app.router.add_routes(with_expect_continue(metrics_routes.routes))
        app[metrics_routes.METRICS_TOKEN] = metrics_routes.metrics_token(settings)

    app.cleanup_ctx.append(
        in_order(
            limits_ctx,
            *([metrics_routes.metrics_ctx] if settings.metrics else []),
            store_ctx,
            shared_files_ctx,
            group_ctx,
            forwarding_ctx,
            auth_ctx,
            engine_ctx,
            admin_ctx,
            compute_nodes_ctx,
            runtime_ctx,
            status.status_ctx,
            sessions_ctx,
            services_ctx,
            tasks_ctx,
        )
    )
    return app


def in_order(
    *contexts: Callable[[web.Application], AsyncIterator[None]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """One cleanup context entering ``contexts`` in order and leaving them in reverse.

    If one fails to start, those already started are left at once. aiohttp's own list
    would leave them only from ``runner.cleanup()``, which ``web.run_app`` never calls
    when start-up fails: ``o16n serve`` then printed the error and hung for good, its
    database thread still open (a Docker engine that does not answer did it)."""

    async def all_of(app: web.Application) -> AsyncIterator[None]:
        entered: list[contextlib.AbstractAsyncContextManager[None]] = []
        try:
            for context in contexts:
                manager = contextlib.asynccontextmanager(context)(app)
                await manager.__aenter__()
                entered.append(manager)
            yield
        finally:
            # Left as aiohttp leaves them, with no exception thrown in (the contexts run
            # their clean-up after their ``yield``); one failing does not stop the rest.
            errors: list[BaseException] = []
            for started in reversed(entered):
                try:
                    await started.__aexit__(None, None, None)
                except (Exception, asyncio.CancelledError) as exc:
                    log.exception("clean-up failed")
                    errors.append(exc)
            if errors and sys.exc_info()[1] is None:
                raise errors[0]

    return all_of


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = await open_database(settings)
    app[DB] = db
    log.info("store open", extra={"database": db.where})
    yield
    await db.close()


async def group_ctx(app: web.Application) -> AsyncIterator[None]:
    """This controller's row among the controllers sharing the database, heartbeated, and
    the leases of group-wide jobs; the row and leases go at a clean stop (the jobs have
    stopped by then: the task supervisor's context is left first). The heartbeat is this
    context's own, not the supervisor's: it goes on until every later context has let go
    of its sessions (``detach``), so another controller never takes over a session this
    one still links to."""
    settings = app[SETTINGS]
    membership = Membership(
        GroupRepo(app[DB]), settings.instance, internal_url(settings), settings.lease_seconds
    )
    await membership.join()
    app[MEMBERSHIP] = membership
    heartbeat = asyncio.create_task(membership.run(), name="group-heartbeat")
    try:
        yield
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await membership.leave()


async def shared_files_ctx(app: web.Application) -> AsyncIterator[None]:
    """The directory of the files every controller of a group reads (0700, as the data
    directory), with the archives an earlier start kept in the data directory moved in."""
    settings = app[SETTINGS]
    await asyncio.to_thread(settings.shared_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
    if settings.shared_with_others:
        moved = await asyncio.to_thread(
            archives.move_earlier, settings.data_dir, settings.shared_dir
        )
        if moved:
            log.info(
                "moved archives into the shared directory",
                extra={"count": moved, "path": str(settings.shared_dir)},
            )
    yield


async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Tokens, local accounts, and the directory ``O16N_APPSETTINGS`` names, if any."""
    settings = app[SETTINGS]
    config = appsettings.configured(settings)
    directory = Directory(app[DB], settings.access_token_ttl)
    directory.sources = config.token_sources
    membership = app[MEMBERSHIP]
    membership.want(PURGES)
    directory.purge_here = lambda: membership.holds(PURGES)
    await ensure_admin(settings, directory.users_repo)
    await directory.reload()
    secret = await asyncio.to_thread(jwt_secret, settings)
    codec = AccessTokenCodec(secret, settings.access_token_ttl)
    ldap = LdapAccounts(config.ldap) if config.ldap is not None else None
    named = config.roles.owner | config.roles.contributor | config.roles.reader
    verifier = OidcVerifier(config.aad, groups=named) if config.aad is not None else None
    try:
        if verifier is not None:
            await verifier.start()
        app[AUTH] = AuthService(
            settings,
            directory,
            codec,
            config,
            ldap=LdapSignIn(ldap, config.roles, directory, BAD_CREDENTIALS) if ldap else None,
            oidc=OidcSignIn(verifier, config.roles, directory) if verifier else None,
        )
        log.info("sign-in ready", extra={"directory": config.source})
        app[TASKS].spawn("auth-directory-watch", directory.watch())
        yield
    finally:
        if verifier is not None:
            await verifier.close()
        if ldap is not None:
            await ldap.close()


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """The engine ``O16N_ENGINE`` names (``controller.runtime.engines``)."""
    async with engines.open_engine(app[SETTINGS]) as engine:
        app[ENGINE] = engine
        log.info("engine ready", extra={"engine": engine.name})
        yield


async def admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """The audit trail (written in the background, purged hourly with the tokens)."""
    settings = app[SETTINGS]
    audit = AuditLog(AuditRepo(app[DB]), settings.audit_retention_days, settings.trusted_networks)
    app[AUDIT] = audit
    app[AUTH].audit = audit
    app[AUTH].directory.purgers.append(audit.purge)
    app[AUTH].directory.purgers.append(app[MEMBERSHIP].purge)
    app[TASKS].spawn("audit-writer", audit.run())
    yield
    await audit.close()


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = app[ENGINE]
    agent = await asyncio.to_thread(agent_bundle.stage, settings.data_dir)
    log.info("agent staged", extra={"path": str(agent)})
    sandboxes = Sandboxes(engine.runtime, engine.environments, settings, agent)
    app[SANDBOXES] = sandboxes
    app[PROBE] = HealthProbe(
        engine,
        settings.data_dir,
        int(settings.disk_fail_bytes),
        int(settings.disk_warn_bytes),
        shared_dir=settings.shared_dir if settings.shared_with_others else None,
    )
    yield
    await app[PROBE].close()
    await sandboxes.close()


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Adopt the sessions an earlier run left running, reap every other leftover container,
    then keep the warm pool full and close idle sessions."""
    settings = app[SETTINGS]
    sandboxes = app[SANDBOXES]
    pool = WarmPool(sandboxes, settings.warm_pool_size, "sessions")
    app[WARM_POOLS].append(pool)
    repo = SessionsRepo(app[DB])
    manager = SessionManager(settings, repo, sandboxes, pool)
    app[SESSIONS] = manager
    audit = app[AUDIT]
    manager.on_reaped = lambda session, why: audit.record(
        "session.close", session.id, actor="system", detail={"reason": why}
    )
    membership = app[MEMBERSHIP]
    manager.purge_here = lambda: membership.holds(PURGES)
    sandboxes.held_elsewhere = lambda: repo.held_elsewhere(settings.instance)
    owned = await sandboxes.owned()
    kept = await manager.adopt(owned) | await sandboxes.held_elsewhere()
    await sandboxes.reap([h for h in owned if h.key not in kept])
    manager.collect_unfinished(app[TASKS].spawn)
    # the sessions of a controller of the group that stopped (or of this data directory's
    # controller under another O16N_INSTANCE): now, not a third of a lease later
    try:
        await manager.take_over(time.time())
    except Exception:  # the database, a moment: the periodic take-over tries again
        log.exception("taking sessions over at start failed")
    await sandboxes.sweep()  # the socket directories of containers gone
    if not kept:  # an adopted session may run on an earlier bundle: the next start prunes
        await asyncio.to_thread(agent_bundle.prune, sandboxes.agent_dir)
    sandboxes.on_exit(manager.on_exit)
    sandboxes.on_exit(pool.on_exit)
    app[SNAPSHOTS] = SnapshotManager(settings, SnapshotsRepo(app[DB]), manager, sandboxes)
    app[session_routes.SNAPSHOT_SOURCE] = app[SNAPSHOTS].source
    app[TASKS].spawn("engine-watch", sandboxes.watch())
    app[TASKS].spawn("sandbox-sweep", sandboxes.keep_clean(SWEEP_INTERVAL))
    app[TASKS].spawn("warm-pool", pool.keep_full())
    app[TASKS].spawn("session-idle-reaper", manager.run_idle_reaper())
    app[TASKS].spawn("session-take-over", manager.run_take_over(settings.lease_seconds / 3))
    app[TASKS].spawn("session-execution-log", manager.log.run())
    yield
    await pool.close()
    await manager.detach()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the published services and warm their pools, resume unfinished batches; remove
    the service containers at exit (a restarted controller warms fresh ones)."""
    tasks = app[TASKS]
    settings = app[SETTINGS]
    modules = [m.strip() for m in settings.service_preload.split(",") if m.strip()]

    async def preload(sandbox: Sandbox) -> None:
        await sandbox.call("preload", {"modules": modules}, timeout=settings.service_init_timeout)

    warm = WarmPool(app[SANDBOXES], settings.service_warm_pool_size, "services", preload)
    app[WARM_POOLS].append(warm)
    registry = ServiceRegistry(
        settings, ServicesRepo(app[DB]), app[SNAPSHOTS], app[SANDBOXES], tasks.spawn, warm
    )
    registry.batch_document = batch_swagger.document
    app[SERVICES] = registry
    await registry.load()
    runner = BatchRunner(settings, BatchesRepo(app[DB]), registry, tasks)
    app[BATCHES] = runner
    membership = app[MEMBERSHIP]
    await membership.acquire(BATCHES_LEASE)  # alone, it resumes the batches at once
    tasks.spawn("batch-lead", membership.run_as_leader(BATCHES_LEASE, runner.lead))
    await sweep_environments(app[SANDBOXES], app[SNAPSHOTS], registry)
    app[SANDBOXES].on_exit(registry.on_exit)
    app[SANDBOXES].on_exit(warm.on_exit)
    # every snapshot file no row names is a leftover at start, unless another controller
    # of the group (sharing the files) is writing one right now
    await app[SNAPSHOTS].sweep(everything=await membership.alone())
    await registry.sweep()
    tasks.spawn("file-sweep", sweep_files(app[SANDBOXES], app[SNAPSHOTS], registry))
    tasks.spawn("service-pool-trim", registry.keep_pools_trim())
    tasks.spawn("service-catalogue-watch", registry.watch())
    tasks.spawn("service-warm-pool", warm.keep_full())
    yield
    await registry.close()
    await warm.close()


async def sweep_environments(
    sandboxes: Sandboxes,
    snapshots: SnapshotManager,
    services: ServiceRegistry,
    min_age: float = 0.0,
) -> None:
    """Release this instance's snapshot and service environments no row names."""
    keep = services.environments() | await snapshots.environments()
    await sandboxes.environments.sweep(keep, min_age)


async def sweep_files(
    sandboxes: Sandboxes, snapshots: SnapshotManager, services: ServiceRegistry
) -> None:
    """Run forever: remove the snapshot and service files and environments no row names;
    the environments too, since one whose build outlived a killed controller appears after
    the next one's start-up sweep."""
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        try:
            await snapshots.sweep()
            await services.sweep()
            await sweep_environments(sandboxes, snapshots, services, min_age=SNAPSHOT_SWEEP_AGE)
        except Exception:  # the database or the disk failed: try again at the next round
            log.exception("file sweep failed")


async def tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[TASKS].close()


def run(settings: Settings, **kwargs: Any) -> None:
    """Serve ``settings``' app until interrupted."""
    from controller.logs import AccessLogger

    app = create_app(settings)
    log.info("o16n starting", extra={"settings": settings.describe()})
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),
        host=settings.host,
        port=settings.port,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=lambda text: print(text, flush=True),
        **kwargs,
    )
