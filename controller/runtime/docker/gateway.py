"""Every call to the Docker engine, as named async methods.

The Docker SDK for Python is blocking, so each call runs on a bounded thread pool (a
separate small pool for slow calls: commit, build, image removal) and the event loop
never waits on the engine. Docker's exceptions are translated here, once, into the
domain error tree; "not found" while tearing down counts as success.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.transport import unixconn

from controller.errors import EngineUnavailable, NotFoundError, RuntimeFailure, out_of_space
from controller.metrics.definitions import docker_call

log = logging.getLogger(__name__)

#: What may go into a Dockerfile line we write: image names, label keys and values.
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,200}$")


def dockerfile_safe(*values: str) -> bool:
    """Whether every value may go into a Dockerfile line ``derive_image`` writes."""
    return all(_LABEL_SAFE.match(value) for value in values)


def _connect_closing(self: Any) -> None:
    """docker-py's ``UnixHTTPConnection.connect``, closing the socket when the connect
    fails: 7.x leaves it to the garbage collector (a ResourceWarning) on every failed
    connect to an engine that is away, a lost compute node's say, which probes and polls
    make over and over."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(self.timeout)
    try:
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


unixconn.UnixHTTPConnection.connect = _connect_closing

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What ``docker inspect`` says about a container, reduced to what we use."""

    id: str
    status: str  # created | running | paused | restarting | removing | exited | dead
    exit_code: int | None
    oom_killed: bool
    error: str
    labels: dict[str, str]
    image: str


@dataclass(frozen=True, slots=True)
class EngineInfo:
    version: str
    api_version: str
    containers_running: int
    storage_driver: str


class DockerGateway:
    def __init__(self, client: Any, workers: int, slow_workers: int) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="docker")
        self._slow = ThreadPoolExecutor(slow_workers, thread_name_prefix="docker-slow")
        # a thread of its own: a probe measures the engine, not our own queue of calls
        self._probe = ThreadPoolExecutor(1, thread_name_prefix="docker-probe")
        self._closed = False

    @classmethod
    async def connect(
        cls,
        workers: int = 8,
        slow_workers: int = 2,
        *,
        base_url: str | None = None,
        timeout: int = 120,
    ) -> DockerGateway:
        """Connect to the engine at ``base_url`` (a compute node's), else the one named by
        DOCKER_HOST (default: the local socket)."""
        try:
            if base_url is None:
                make = partial(
                    docker.from_env,
                    version="auto",
                    timeout=timeout,
                    max_pool_size=workers + slow_workers + 1,
                )
            else:
                make = partial(
                    docker.DockerClient,
                    base_url=base_url,
                    version="auto",
                    timeout=timeout,
                    max_pool_size=workers + slow_workers + 1,
                )
            client = await asyncio.to_thread(make)
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(f"the Docker engine does not answer: {exc}") from None
        return cls(client, workers, slow_workers)

    async def close(self) -> None:
        """Let go of the engine. Calls still waiting for a thread, and calls made after,
        fail with ``EngineUnavailable`` (a lost compute node's gateway is closed while
        requests still hold it), never with a cancellation nobody asked for."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._slow.shutdown(wait=False, cancel_futures=True)
        self._probe.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._client.close)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """One engine call on the ordinary pool, timed by the SDK call's name (what
        ``o16n_docker_call_duration_seconds`` calls its operation)."""
        with docker_call(fn.__name__):
            return await self._call(self._pool, fn, *args, **kwargs)

    async def _run_slow(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with docker_call(fn.__name__):
            return await self._call(self._slow, fn, *args, **kwargs)

    async def _call(
        self, pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, partial(fn, *args, **kwargs))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise EngineUnavailable(
                    "the Docker engine was let go of (its node was lost)"
                ) from None
            raise
        except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
            if self._closed:
                raise EngineUnavailable(
                    "the Docker engine was let go of (its node was lost)"
                ) from None
            raise RuntimeFailure(f"the Docker engine call failed: {exc}") from None
        except docker.errors.NotFound as exc:
            raise NotFoundError(_explain(exc)) from None
        except docker.errors.APIError as exc:
            if "no space left on device" in _explain(exc):  # often the data dir's disk too
                raise out_of_space("the Docker engine's disk") from None
            raise RuntimeFailure(f"the Docker engine refused: {_explain(exc)}") from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise EngineUnavailable(f"the Docker engine does not answer: {exc}") from None

    # --- engine ---------------------------------------------------------------------------

    async def info(self) -> EngineInfo:
        data = await self._run(self._client.api.info)
        version = await self._run(self._client.api.version)
        return EngineInfo(
            version=str(version.get("Version", "?")),
            api_version=str(version.get("ApiVersion", "?")),
            containers_running=int(data.get("ContainersRunning", 0)),
            storage_driver=str(data.get("Driver", "?")),
        )

    async def ping(self) -> None:
        """The engine's cheapest call (``/_ping``), on a thread of its own: it answers, or
        this raises."""
        with docker_call("ping"):
            await self._call(self._probe, self._client.api.ping)

    async def runc_version(self) -> tuple[str | None, str | None]:
        """The engine's runc: its version and commit (a distribution's package version)."""
        version = await self._run(self._client.api.version)
        for component in version.get("Components") or []:
            if isinstance(component, dict) and component.get("Name") == "runc":
                details = component.get("Details") or {}
                commit = details.get("GitCommit") if isinstance(details, dict) else None
                return _text(component.get("Version")), _text(commit)
        info = await self._run(self._client.api.info)
        commit = (info.get("RuncCommit") or {}).get("ID")
        return None, _text(commit)

    # --- images ---------------------------------------------------------------------------

    async def image_exists(self, ref: str) -> bool:
        try:
            await self._run(self._client.api.inspect_image, ref)
        except NotFoundError:
            return False
        return True

    async def image_size(self, ref: str) -> int:
        data = await self._run(self._client.api.inspect_image, ref)
        return int(data.get("Size", 0))

    async def pull(self, ref: str) -> bool:
        """Try to pull ``ref``; ``False`` when no registry can serve it."""
        repository, _, tag = ref.partition(":")
        try:
            await self._run_slow(self._client.api.pull, repository, tag or "latest")
        except (RuntimeFailure, NotFoundError) as exc:
            log.info("pull failed", extra={"image": ref, "reason": exc.message})
            return False
        return True

    async def build(
        self,
        context: Path,
        tag: str,
        buildargs: dict[str, str],
        progress: Callable[[str], None],
    ) -> None:
        """``docker build`` of ``context``, streaming its output lines to ``progress``."""

        def build() -> None:
            stream = self._client.api.build(
                path=str(context), tag=tag, buildargs=buildargs, rm=True, forcerm=True, decode=True
            )
            for chunk in stream:
                if "error" in chunk:
                    raise RuntimeFailure(f"image build failed: {chunk['error'].strip()}")
                text = chunk.get("stream") or chunk.get("status")
                if text and text.strip():
                    progress(text.rstrip("\n"))

        await self._run_slow(build)

    async def image_tags(self, labels: dict[str, str], made_before: float | None) -> list[str]:
        """Every ``repository:tag`` name of the images carrying all ``labels`` exactly
        (made before the Unix time ``made_before``, if given)."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        images = await self._run(self._client.api.images, filters=filters)
        return sorted(
            tag for image in images for tag in image.get("RepoTags") or []
            if made_before is None or int(image.get("Created", 0)) < made_before
        )  # fmt: skip

    async def image_layers(self, ref: str) -> list[str]:
        """The image's layers, bottom first, by their content digests (``RootFS.Layers``)."""
        data = await self._run(self._client.api.inspect_image, ref)
        return [str(layer) for layer in (data.get("RootFS") or {}).get("Layers") or []]

    async def save_image(self, ref: str, sink: Callable[[bytes], object]) -> None:
        """``docker save`` of ``ref``, handed to ``sink`` chunk by chunk on a worker thread
        (the archive is the image's size: it never sits in memory)."""

        def save_image() -> None:
            for chunk in self._client.api.get_image(ref, chunk_size=1 << 20):
                sink(chunk)

        await self._run_slow(save_image)

    async def load_image(self, source: Callable[[], Iterator[bytes]]) -> None:
        """``docker load`` of the archive ``source`` yields, streamed from a worker thread."""

        def load_image() -> None:
            for item in self._client.api.load_image(source()) or ():
                if isinstance(item, dict) and item.get("error"):
                    raise RuntimeFailure(f"image load failed: {str(item['error']).strip()}")

        await self._run_slow(load_image)

    async def image_labels(self, ref: str) -> dict[str, str]:
        data = await self._run(self._client.api.inspect_image, ref)
        return dict((data.get("Config") or {}).get("Labels") or {})

    async def derive_image(
        self, source: str, repository: str, tag: str, labels: dict[str, str]
    ) -> None:
        """A new image ``repository:tag``: ``source`` plus ``labels``. A build of a
        two-line Dockerfile (``FROM``, ``LABEL``), so no layer is copied and, unlike a
        commit, no container is left behind if the controller dies meanwhile. Never from the
        build cache: a cached image keeps the time of its first build, and the periodic reap
        would take an image published a moment ago for an old one no row names."""
        if not dockerfile_safe(source, *labels, *labels.values()):
            raise ValueError(f"not a safe image name or label: {source!r} {labels!r}")
        lines = [f"FROM {source}", "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items())]
        dockerfile = io.BytesIO(("\n".join(lines) + "\n").encode())

        def derive_image() -> None:
            stream = self._client.api.build(
                fileobj=dockerfile,
                tag=f"{repository}:{tag}",
                rm=True,
                forcerm=True,
                nocache=True,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise RuntimeFailure(f"image build failed: {chunk['error'].strip()}")

        await self._run_slow(derive_image)

    async def remove_image(self, ref: str) -> bool:
        """Remove an image reference; absent counts as removed. One that a container still
        uses (a session started from a snapshot being deleted, say) is kept and ``False``
        returned: the start-up reap removes it once nothing uses it."""

        def remove_image() -> bool:
            try:
                self._client.api.remove_image(ref, noprune=False)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: in use by a container
                    raise
                log.info("image kept: a container uses it", extra={"image": ref})
                return False
            return True

        with contextlib.suppress(NotFoundError):
            return await self._run_slow(remove_image)
        return True

    async def commit(
        self, container_id: str, repository: str, tag: str, labels: dict[str, str]
    ) -> str:
        """``docker commit``; returns the new image id."""
        changes = [f'LABEL {k}="{v}"' for k, v in labels.items()]
        result = await self._run_slow(
            self._client.api.commit, container_id, repository=repository, tag=tag, changes=changes
        )
        return str(result["Id"])

    # --- containers -----------------------------------------------------------------------

    async def create_container(self, kwargs: dict[str, Any]) -> str:
        """Create (not start) a container from ``Container.create`` style arguments."""
        container = await self._run(self._client.containers.create, **kwargs)
        return str(container.id)

    async def start(self, container_id: str) -> None:
        await self._run(self._client.api.start, container_id)

    async def inspect(self, container_id: str) -> ContainerInfo:
        data = await self._run(self._client.api.inspect_container, container_id)
        return _container_info(data)

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        """Send ``signal``; a container that is gone or stopped counts as done."""
        try:
            await self._run(self._client.api.kill, container_id, signal=signal)
        except NotFoundError:
            pass
        except RuntimeFailure as exc:
            if "is not running" not in exc.message:
                raise

    async def remove_container(self, container_id: str) -> None:
        """Force-remove; "not found" and "already in progress" count as success."""
        try:
            await self._run(self._client.api.remove_container, container_id, force=True, v=True)
        except NotFoundError:
            pass
        except RuntimeFailure as exc:
            if "already in progress" not in exc.message:
                raise

    async def list_containers(self, label: str) -> list[ContainerInfo]:
        """Every container (running or not) carrying ``label`` (``key`` or ``key=value``)."""
        summaries = await self._run(
            self._client.api.containers, all=True, filters={"label": [label]}
        )
        infos = []
        for summary in summaries:
            infos.append(
                ContainerInfo(
                    id=summary["Id"],
                    status=summary.get("State", "?"),
                    exit_code=None,
                    oom_killed=False,
                    error="",
                    labels=summary.get("Labels") or {},
                    image=summary.get("Image", ""),
                )
            )
        return infos

    @contextlib.asynccontextmanager
    async def events(self, filters: dict[str, list[str]]) -> AsyncIterator[EventStream]:
        """The engine's events matching ``filters`` as they happen, read on a thread of
        their own (the stream blocks between events); closing it ends the read."""
        reader = ThreadPoolExecutor(1, thread_name_prefix="docker-events")
        stream: Any = None
        try:
            stream = await self._call(
                reader, partial(self._client.api.events, filters=filters, decode=True)
            )
            yield EventStream(self, reader, stream)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()  # wakes the reader; does nothing once the engine closed it
                with contextlib.suppress(Exception):
                    stream._response.close()  # so also give the connection back, always
            reader.shutdown(wait=False, cancel_futures=True)

    async def changed_paths(self, container_id: str) -> list[str]:
        """``docker diff``: paths the container added, changed or deleted in its image."""
        changes = await self._run(self._client.api.diff, container_id)
        return [str(change["Path"]) for change in changes or []]

    async def image_id(self, ref: str) -> str:
        data = await self._run(self._client.api.inspect_image, ref)
        return str(data["Id"])

    # --- administration -------------------------------------------------------------------

    async def engine_details(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``docker info`` and ``docker version`` as the engine sends them."""
        info = await self._run(self._client.api.info)
        version = await self._run(self._client.api.version)
        return dict(info), dict(version)

    async def system_df(self) -> dict[str, Any]:
        """``docker system df`` (slow: the engine sizes every image, container and volume)."""
        return dict(await self._run_slow(self._client.api.df))

    async def container_stats(self, container_id: str) -> dict[str, Any]:
        """One sample of a container's memory and CPU use (``one_shot``: no second sample,
        so it answers in milliseconds rather than the usual second or two)."""
        data = await self._run(self._client.api.stats, container_id, stream=False, one_shot=True)
        return dict(data)


class EventStream:
    """Decoded engine events; ends with ``EngineUnavailable`` when the engine closes it."""

    def __init__(self, gateway: DockerGateway, reader: ThreadPoolExecutor, stream: Any) -> None:
        self._gateway = gateway
        self._reader = reader
        self._stream = stream

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        event = await self._gateway._call(self._reader, next, self._stream, None)
        if event is None:  # the engine stopped or the connection broke
            raise EngineUnavailable("the Docker engine closed its event stream")
        return dict(event)


def _container_info(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    return ContainerInfo(
        id=data["Id"],
        status=str(state.get("Status", "?")),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        labels=config.get("Labels") or {},
        image=str(config.get("Image", "")),
    )


def _explain(exc: docker.errors.APIError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _text(value: object) -> str | None:
    return str(value)[:200] if isinstance(value, str) and value else None
