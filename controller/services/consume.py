"""Where a consume request goes (API.md §6.2-6.5): check the inputs, borrow a warm container
from the service's pool, run the code there (or score the model: a realtime service),
shape the answer.

An error in the service's code is the caller's result (200, ``success: false``); a
container that dies or hangs is replaced, and the request answered with why. Inputs are
checked here, before any container is touched, so a bad request is a 400 naming the input.
"""

from __future__ import annotations

from typing import Any

from o16n_agent.codec import DecodeError, check_input

from controller.errors import AgentProtocolError, BadRequestError, PayloadTooLargeError
from controller.runtime.agent_link import AGENT_REQUEST_MAX, message_size
from controller.services.realtime import model
from controller.services.registry import Service
from controller.sessions.models import changed_files, failed_result
from controller.timing import now, record


def check_inputs(service: Service, body: Any) -> dict[str, Any]:
    """The declared inputs of ``body``, each checked against its type; extra keys ignored
    (a realtime service: the model's columns of ``inputData``)."""
    if service.model is not None:
        return model.check_frame(service.model, body)
    if not isinstance(body, dict):
        raise BadRequestError(
            "the request body must be a JSON object mapping input names to values"
        )
    inputs: dict[str, Any] = {}
    for name, kind, declared in service.inputs:
        if name not in body:
            raise BadRequestError(f"missing input '{name}' ({declared})")
        value = body[name]
        try:
            check_input(value, kind)
        except DecodeError as exc:
            raise BadRequestError(f"input '{name}' ({declared}): {exc}") from None
        inputs[name] = value
    return inputs


#: how many times its bytes a JSON body may take once written again (``1e15`` becomes
#: ``1000000000000000.0``): a body below AGENT_REQUEST_MAX / GROWTH_MAX needs no measuring
GROWTH_MAX = 5
#: room for the message's other fields
_MESSAGE_ROOM = 4096


def check_size(inputs: dict[str, Any], body_size: int | None = None) -> None:
    """413 when ``inputs`` would not fit in the one message a container is sent (its
    agent would hang up); measured only when the body they came in (``body_size``) may
    be that large."""
    room = AGENT_REQUEST_MAX - _MESSAGE_ROOM
    if body_size is not None and body_size * GROWTH_MAX <= room:
        return
    size = message_size({"inputs": inputs})
    if size > room:
        raise PayloadTooLargeError(
            f"the inputs take {size} bytes as a container is sent them, more than the "
            f"{room} it takes at once: send fewer rows per request"
        )


def failure(service: Service, message: str) -> dict[str, Any]:
    return failed_result(
        message,
        {p["name"]: None for p in service.record.outputs},
        outputFiles={name: None for name in service.record.output_files},
    )


class NodeLost(Exception):
    """The container's compute node was lost during the request, which never finished: a
    caller that may run it again (a batch record) does, on another container."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("errorMessage", ""))
        self.result = result  # the answer for a caller that does not run it again


async def run(
    service: Service, inputs: dict[str, Any], timeout: float, *, again_if_lost: bool = False
) -> dict[str, Any]:
    """One request in one of the service's warm containers. With ``again_if_lost``, a
    request whose container's node was lost raises :class:`NodeLost` instead of answering."""
    pool = service.pool
    sandbox = await pool.acquire()
    healthy = True
    try:
        op = "run" if service.model is None else "score"
        outcome = await sandbox.run(op, {"inputs": inputs}, timeout=timeout, grace=5.0)
        healthy = outcome.reply is not None
        if outcome.stuck:
            return failure(service, f"the request exceeded the time limit of {timeout:g} s")
        if outcome.reply is None:
            ended = failure(
                service, f"the service's container ended during the request: {outcome.reason}"
            )
            if outcome.lost and again_if_lost:
                raise NodeLost(ended)
            return ended
        started = now()
        try:
            result = shape(service, outcome.reply, inputs)
        except AgentProtocolError:
            healthy = False  # a container that answers nonsense serves nobody else
            raise
        finally:
            record("encode", started)
    finally:
        pool.release(sandbox, healthy)
    if outcome.timed_out and not result["success"]:
        result["errorMessage"] = f"the request exceeded the time limit of {timeout:g} s"
    return result


def shape(service: Service, raw: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The agent's reply as a ``WebServiceResult``, checked (the agent is untrusted); a
    realtime service's output columns, one value per row of ``inputs``, too."""
    success = raw.get("success")
    error = raw.get("error")
    console = raw.get("console")
    changed = raw.get("changed_files")
    total = raw.get("changed_total", 0)
    outputs = raw.get("outputs")
    files = raw.get("files")
    if not (
        isinstance(success, bool)
        and isinstance(error, str)
        and isinstance(console, str)
        and isinstance(changed, list)
        and all(isinstance(name, str) for name in changed)
        and isinstance(total, int)
        and not isinstance(total, bool)
        and isinstance(outputs, dict)
        and isinstance(files, dict)
        and all(isinstance(v, str | None) for v in files.values())
    ):
        raise AgentProtocolError("the service's agent sent a malformed reply")
    if service.model is not None:  # failed: no columns at all
        rows = model.rows_of(inputs)
        outputs = model.check_output(service.model, outputs, rows) if success else {}
    return {
        "success": success,
        "errorMessage": error,
        "consoleOutput": console,
        **changed_files(changed, total),
        "outputParameters": {p["name"]: outputs.get(p["name"]) for p in service.record.outputs},
        "outputFiles": {name: files.get(name) for name in service.record.output_files},
    }
