"""``POST /admin/diagnostics``: ML Server's ``az ml admin diagnostic run``.

Each step runs the real thing through the managers' own paths (no HTTP round trip, so a
drained node is still diagnosable: the drain refuses new *requests*, not the operator's
check) and reports pass/fail, its duration and the error, under a timeout of its own, so
the whole run stays under a minute. Everything a step makes is named
``o16n-diagnostics-<hex>`` and owned by a throwaway user of that name: that prefix is
reserved (see ``reserved``), and a ``finally``
removes the session, the service (its pool, and its environment), any container
still labelled with that owner, and the user, whatever failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controller.admin.common import owner
from controller.audit.trail import audited, response_json
from controller.auth.passwords import generate_password, hash_password_async
from controller.auth.roles import Identity
from controller.auth.service import AUTH
from controller.errors import O16nError
from controller.http.responses import json_response
from controller.reserved_names import PREFIX
from controller.roles import Role
from controller.runtime.engines import ENGINE
from controller.services import consume
from controller.services.models import PublishWebServiceRequest
from controller.services.registry import SERVICES
from controller.sessions.manager import SESSIONS
from controller.sessions.models import ExecuteRequest
from controller.settings import SETTINGS
from controller.store.db import DB

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

#: seconds each step may take (the sum, 50 s, plus the cleanup's 8 stay under a minute)
TIMEOUTS = {
    "database": 5.0,
    "engine": 5.0,
    "runtimeImage": 5.0,
    "session": 12.0,
    "service": 15.0,
    "token": 5.0,
    "disk": 3.0,
}
#: seconds the cleanup may take before the reply goes (it goes on in the background)
CLEANUP_TIMEOUT = 8.0
#: seconds a timed-out step gets to finish once its session is closed (past the cleanup's
#: 8 s the reply goes and this goes on in the background)
PENDING_GRACE = 30.0
BACKGROUND = "the cleanup did not finish in time; it goes on in the background"
#: seconds the cleanup waits for the engine to have removed the run's containers, and
#: between its looks
REMOVAL_WAIT = 30.0
REMOVAL_POLL = 0.25
#: free bytes under which the disk step fails
DISK_MINIMUM = 256 * 1024**2


class Run:
    """One diagnostics run: its temporaries, so the cleanup knows what to remove."""

    def __init__(self, app: web.Application, address: str) -> None:
        self.app = app
        self.address = address
        self.name = PREFIX + secrets.token_hex(4)
        self.password = generate_password()
        self.identity: Identity | None = None
        self._user_lock = asyncio.Lock()
        #: steps that timed out, still running (never cancelled half way)
        self.pending: set[asyncio.Future[dict[str, Any]]] = set()

    async def user(self) -> Identity:
        """The throwaway user (made once, by the first step that needs it: a step that timed
        out may still be making it when the next one asks)."""
        async with self._user_lock:
            return await self._make_user()

    async def _make_user(self) -> Identity:
        if self.identity is None:
            directory = self.app[AUTH].directory
            record = await directory.users_repo.add(
                self.name, await hash_password_async(self.password), Role.CONTRIBUTOR
            )
            await directory.reload()
            self.identity = Identity(record.id, record.username, record.role)
        return self.identity

    # --- steps ------------------------------------------------------------------------------

    async def database(self) -> dict[str, Any]:
        seconds = await self.app[DB].ping()
        return {"writeLockMs": round(seconds * 1000, 1)}

    async def engine(self) -> dict[str, Any]:
        engine = self.app[ENGINE]
        if engine.about is None:
            return {"engine": engine.name}
        info = await engine.about()
        return {"version": info.get("version"), "apiVersion": info.get("apiVersion")}

    async def runtime_image(self) -> dict[str, Any]:
        engine = self.app[ENGINE]
        image = engine.environments.base
        if engine.base_size is None:
            return {"image": image}
        try:
            size = await engine.base_size()
        except O16nError:
            raise RuntimeError(f"the runtime image {image} is missing") from None
        return {"image": image, "sizeBytes": size}

    async def session(self) -> dict[str, Any]:
        identity = await self.user()
        manager = self.app[SESSIONS]
        session = await manager.create(identity, self.name)
        result = await manager.execute(identity, session.id, ExecuteRequest(code="x = 5\nprint(x)"))
        output = result.get("consoleOutput")
        if not result.get("success") or output != "5\n":
            raise RuntimeError(
                f"'x = 5; print(x)' printed {output!r} (error: {result.get('errorMessage')!r})"
            )
        return {"consoleOutput": output}

    async def service(self) -> dict[str, Any]:
        identity = await self.user()
        registry = self.app[SERVICES]
        request = PublishWebServiceRequest.model_validate(
            {
                "code": "y = x * 2",
                "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
                "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
            }
        )
        service = await registry.publish(identity, self.name, "1", request)
        result = await consume.run(service, {"x": 21}, self.app[SETTINGS].consume_timeout)
        if not result["success"] or result["outputParameters"].get("y") != 42:
            raise RuntimeError(
                f"consuming the service answered {result['outputParameters']!r} "
                f"(error: {result['errorMessage']!r}), not y = 42"
            )
        return {"outputParameters": result["outputParameters"]}

    async def token(self) -> dict[str, Any]:
        auth = self.app[AUTH]
        if not auth.local_accounts:  # the throwaway user is local; it could not log in
            return {"skipped": "local accounts are off while a directory signs users in"}
        identity = await self.user()
        pair = await auth.login(self.name, self.password, self.address)
        if (await auth.authenticate(pair.access_token)).user_id != identity.user_id:
            raise RuntimeError("the issued access token names another user")
        renewed = await auth.refresh(pair.refresh_token)
        if (await auth.authenticate(renewed.access_token)).user_id != identity.user_id:
            raise RuntimeError("the refreshed access token names another user")
        await auth.revoke(renewed.refresh_token)
        return {"expiresIn": renewed.expires_in}

    async def disk(self) -> dict[str, Any]:
        settings = self.app[SETTINGS]
        usage = await asyncio.to_thread(shutil.disk_usage, settings.data_dir)
        if usage.free < DISK_MINIMUM:
            raise RuntimeError(f"only {usage.free} bytes free under the data directory")
        found = {"freeBytes": usage.free, "totalBytes": usage.total}
        if settings.shared_with_others:
            shared = await asyncio.to_thread(shutil.disk_usage, settings.shared_dir)
            if shared.free < DISK_MINIMUM:
                raise RuntimeError(f"only {shared.free} bytes free under the shared directory")
            found["sharedFreeBytes"] = shared.free
        return found

    # --- cleanup ----------------------------------------------------------------------------

    async def cleanup(self) -> list[str]:
        """Remove every temporary; what could not be removed, as messages. A step that timed
        out was not cancelled (a launch cut short would leak its container): its session is
        closed first, which ends an execution, then it gets up to 30 s to finish, then
        whatever it made is removed too."""
        problems: list[str] = []

        async def attempt(what: str, action: Callable[[], Awaitable[Any]]) -> None:
            try:
                await action()
            except Exception as exc:
                log.warning("diagnostics cleanup failed", extra={"what": what}, exc_info=True)
                problems.append(f"{what}: {exc}")

        await attempt("session and service", self._sessions_and_services)
        if self.pending:
            await asyncio.wait(self.pending, timeout=PENDING_GRACE)
            await attempt("session and service", self._sessions_and_services)
        await attempt("containers", self._containers)
        await attempt("user", self._user)
        return problems

    async def _sessions_and_services(self) -> None:
        identity, app = self.identity, self.app
        if identity is None:
            return
        for session in app[SESSIONS].everyone():
            if session.owner_id == identity.user_id:
                await app[SESSIONS].close(identity, session.id)
        for service in app[SERVICES].all():
            record = service.record
            if record.publisher_id == identity.user_id:
                await app[SERVICES].delete(identity, record.name, record.version)

    async def _containers(self) -> None:
        """Any container still labelled with the throwaway owner (a launch cut short), and
        those being removed in the background (a closed session's), until the engine lists
        none: a removal "already in progress" returns before the container is gone, and
        the report says nothing is left."""
        runtime = self.app[ENGINE].runtime
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REMOVAL_WAIT
        while True:
            left = [h for h in await runtime.list_owned() if h.owner == self.name]
            if not left:
                return
            if loop.time() >= deadline:
                raise RuntimeError(f"{len(left)} container(s) still there after {REMOVAL_WAIT:g} s")
            for handle in left:
                await runtime.remove(handle)
            await asyncio.sleep(REMOVAL_POLL)

    async def _user(self) -> None:
        directory = self.app[AUTH].directory
        if await directory.users_repo.by_name(self.name) is not None:
            await directory.users_repo.delete(self.name)
        await directory.reload()


async def _step(
    run: Run, name: str, action: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    timeout = TIMEOUTS[name]
    start = time.perf_counter()
    error: str | None = None
    details: dict[str, Any] = {}
    task = asyncio.ensure_future(action())
    try:
        details = await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        error = f"did not finish within {timeout:g} s"
        run.pending.add(task)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    except asyncio.CancelledError:  # the request went away: the cleanup still waits for it
        run.pending.add(task)
        raise
    except O16nError as exc:
        error = exc.message
    except Exception as exc:
        error = str(exc) or type(exc).__name__
    return {
        "name": name,
        "status": "fail" if error else "pass",
        "durationMs": round((time.perf_counter() - start) * 1000, 1),
        "error": error,
        "details": details,
    }


async def run_diagnostics(app: web.Application, address: str) -> dict[str, Any]:
    """Every step in order, then the cleanup (also when a step failed or was cancelled)."""
    run = Run(app, address)
    start = time.perf_counter()
    steps: list[dict[str, Any]] = []
    leftovers: list[str] = []
    try:
        for name, action in (
            ("database", run.database),
            ("engine", run.engine),
            ("runtimeImage", run.runtime_image),
            ("session", run.session),
            ("service", run.service),
            ("token", run.token),
            ("disk", run.disk),
        ):
            steps.append(await _step(run, name, action))
    finally:
        cleanup = asyncio.ensure_future(run.cleanup())
        with contextlib.suppress(TimeoutError):
            leftovers = await asyncio.wait_for(asyncio.shield(cleanup), CLEANUP_TIMEOUT)
        if not cleanup.done():
            leftovers = [BACKGROUND]
    failed = [s["name"] for s in steps if s["status"] == "fail"]
    return {
        "status": "fail" if failed or leftovers else "pass",
        "failed": failed,
        "durationMs": round((time.perf_counter() - start) * 1000, 1),
        "name": run.name,
        "steps": steps,
        "cleanup": {"status": "fail" if leftovers else "pass", "errors": leftovers},
    }


async def _target(request: web.Request, response: web.StreamResponse | None) -> str:
    body = await response_json(response)
    if isinstance(body, dict) and isinstance(body.get("status"), str):
        return f"node:{body['status']}"
    return "node"


@routes.post("/admin/diagnostics")
@audited("node.diagnostics", target=_target)
async def diagnostics(request: web.Request) -> web.Response:
    """Always 200 when the run happened: whether the node is healthy is in the body."""
    owner(request)
    result = await run_diagnostics(request.app, request.remote or "-")
    return json_response(result)
