"""Typed keys of the shared resources the app factory wires, and of the caller's identity.

Declared once, here. Handlers read what they need from ``request.app[KEY]`` and hand the
concrete objects down; nothing deeper receives the app.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.audit.log import AuditLog
from controller.auth.roles import Identity
from controller.auth.service import AuthService
from controller.batch.runner import BatchRunner
from controller.drain import Drain
from controller.health import HealthProbe
from controller.runtime.docker_gateway import DockerGateway
from controller.runtime.runc import RuncVerdict
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.stats import StatsSampler
from controller.services.registry import ServiceRegistry
from controller.sessions.manager import SessionManager
from controller.settings import Settings
from controller.snapshots.manager import SnapshotManager
from controller.store.db import Database
from controller.tasks import TaskSupervisor

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
AUTH = web.AppKey("auth", AuthService)
DOCKER = web.AppKey("docker", DockerGateway)
SANDBOXES = web.AppKey("sandboxes", Sandboxes)
TASKS = web.AppKey("tasks", TaskSupervisor)
SWAGGER = web.AppKey("swagger", dict[str, Any])
PROBE = web.AppKey("health_probe", HealthProbe)
SESSIONS = web.AppKey("sessions", SessionManager)
SNAPSHOTS = web.AppKey("snapshots", SnapshotManager)
SERVICES = web.AppKey("services", ServiceRegistry)
BATCHES = web.AppKey("batches", BatchRunner)
RUNC = web.AppKey("runc", RuncVerdict)
AUDIT = web.AppKey("audit", AuditLog)
DRAIN = web.AppKey("drain", Drain)
CONTAINER_STATS = web.AppKey("container_stats", StatsSampler)

IDENTITY = web.RequestKey("identity", Identity)
