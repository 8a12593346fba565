"""The operations of an interactive session: execute, workspace objects, files, snapshots.

One persistent namespace lives as long as the container; it is ``__main__`` to the code
that runs in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from o16n_agent import codec, files, protocol, workspace
from o16n_agent.errors import OpError
from o16n_agent.execution import REPLY_MAX, Runner

Reply = tuple[dict[str, Any], bytes | protocol.FileBlob | None]
DEFAULT_CONSOLE_LIMIT = 1 << 20
#: Results of executions the controller has not recorded yet that are kept at most, and
#: the characters they may hold: code, console output, error, changed files' names and
#: output values as JSON (the newest is always kept).
KEPT_MAX = 1000
KEPT_CHARS = 16 << 20


def _kept_size(code: str, result: dict[str, Any]) -> int:
    """About how much a kept result holds. Every part counts: while the controller's store
    cannot write, ``recorded`` stays behind, and any part (an output value, above all) may
    take megabytes. Output values are encoded once more for it, only when there are any."""
    size = len(code) + len(result["console"]) + len(result["error"] or "")
    size += sum(map(len, result["changed_files"]))
    if result["outputs"]:
        size += codec.encoded_size(result["outputs"])
    return size


def new_namespace() -> dict[str, Any]:
    return {"__name__": "__main__", "__builtins__": __builtins__}


class SessionOps:
    def __init__(self, workdir: str, on_state: Callable[[bool], None]) -> None:
        self.workdir = workdir
        self.namespace = new_namespace()
        self.runner = Runner(workdir, on_state)
        #: the controller's number of the execution running now, and the code and result of
        #: those it has not recorded yet, by number, oldest first: a controller that
        #: restarted meanwhile asks for them (``execution_result``). The controller writes
        #: its history behind its answers, a batch at a time, and says in each ``execute``
        #: up to which number it has (``recorded``); without it only the last is kept.
        self.running: int | None = None
        self.kept: dict[int, tuple[str, dict[str, Any], int]] = {}  # code, result, its size
        self._kept_chars = 0

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Any], Reply]]:
        return {
            "execute": self.numbered_execute,
            "execution_result": self.execution_result,
            "workspace_list": self.workspace_list,
            "workspace_get": self.workspace_get,
            "workspace_set": self.workspace_set,
            "workspace_delete": self.workspace_delete,
            "files_list": self.files_list,
            "file_get": self.file_get,
            "file_put": self.file_put,
            "file_delete": self.file_delete,
            "snapshot_save": self.snapshot_save,
            "snapshot_load": self.snapshot_load,
        }

    def execute(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        code = message.get("code")
        if not isinstance(code, str):
            raise OpError("'code' must be a string", "invalid")
        inputs = message.get("inputs") or []
        outputs = message.get("outputs") or []
        limit = message.get("console_limit") or DEFAULT_CONSOLE_LIMIT
        for item in inputs:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name.isidentifier():
                raise OpError(f"invalid input parameter name {name!r}", "invalid")
        if not all(isinstance(n, str) and n.isidentifier() for n in outputs):
            raise OpError("output parameter names must be identifiers", "invalid")
        for item in inputs:
            self.namespace[item["name"]] = item.get("value")
        outcome = self.runner.run(code, self.namespace, int(limit))
        reply: dict[str, Any] = {
            "success": outcome.success,
            "error": outcome.error,
            "cancelled": outcome.cancelled,
            "console": outcome.console,
            "changed_files": outcome.changed_files,
            "changed_total": outcome.changed_total,
            "outputs": [{"name": n, "value": None} for n in outputs],
        }
        if outcome.success and outputs:
            budget = REPLY_MAX - codec.encoded_size(reply) - 4096
            pairs = [(n, self.namespace.get(n)) for n in outputs]
            encoded, error = codec.encode_outputs(pairs, budget, "output parameter")
            if error:
                reply["success"], reply["error"] = False, error
            else:
                reply["outputs"] = [
                    {"name": n, "value": v} for n, v in zip(outputs, encoded, strict=True)
                ]
        return reply, None

    def numbered_execute(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """``execute``, keeping the result under the controller's number ``seq`` until the
        controller says it is recorded."""
        seq = message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = None
        recorded = message.get("recorded")
        if not isinstance(recorded, int) or isinstance(recorded, bool):
            recorded = None
        self.running = seq
        try:
            result, out_blob = self.execute(message, blob)
            if seq is not None:  # kept before ``running`` clears: a hello in between
                self._keep(seq, message["code"], result, recorded)  # still names this execution
        finally:
            self.running = None
        return result, out_blob

    def _keep(self, seq: int, code: str, result: dict[str, Any], recorded: int | None) -> None:
        """Keep execution ``seq``'s result; drop those recorded (all, when the controller
        does not say: it records each before the next), those a controller numbering from
        ``seq`` again gave up, and the oldest beyond the bounds."""
        for old in list(self.kept):
            if recorded is None or old <= recorded or old >= seq:
                self._drop(old)
        size = _kept_size(code, result)
        self.kept[seq] = (code, result, size)
        self._kept_chars += size
        while len(self.kept) > 1 and (len(self.kept) > KEPT_MAX or self._kept_chars > KEPT_CHARS):
            self._drop(next(iter(self.kept)))

    def _drop(self, seq: int) -> None:
        self._kept_chars -= self.kept.pop(seq)[2]

    def execution_state(self) -> dict[str, Any] | None:
        """For the hello: the execution running now, else the last one (its result kept);
        the controller asks for those before it that it has not recorded."""
        running = self.running
        if running is not None:
            return {"seq": running, "running": True}
        if self.kept:
            return {"seq": next(reversed(self.kept)), "running": False}
        return None

    def execution_result(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """The kept result of execution ``seq``, with its code, as ``execute`` answered it.
        Requests are answered one at a time, so the execution has ended when this is read."""
        seq = message.get("seq")
        kept = None if isinstance(seq, bool) or not isinstance(seq, int) else self.kept.get(seq)
        if kept is None:
            raise OpError(f"no result of execution {seq!r} is kept", "not_found")
        return {**kept[1], "code": kept[0]}, None

    def workspace_list(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        return {"names": workspace.visible_names(self.namespace)}, None

    def workspace_get(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        return {}, workspace.dump_object(self.namespace, message.get("name", ""))

    def workspace_set(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        if blob is None:
            raise OpError("no serialized object was sent", "invalid")
        workspace.load_object(self.namespace, message.get("name", ""), blob)
        return {}, None

    def workspace_delete(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        workspace.delete_object(self.namespace, message.get("name", ""))
        return {}, None

    def files_list(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        return {"names": files.list_files(self.workdir)}, None

    def file_get(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        return {}, files.open_file(self.workdir, message.get("name", ""))

    def file_put(self, message: dict[str, Any], blob: protocol.IncomingBlob | None) -> Reply:
        """The upload arrives as an ``IncomingBlob`` and goes straight to the file."""
        files.write_file(self.workdir, message.get("name", ""), blob.read if blob else b"")
        return {}, None

    def file_delete(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        files.delete_file(self.workdir, message.get("name", ""))
        return {}, None

    def snapshot_save(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        data, saved, skipped = workspace.save(self.namespace, self.workdir)
        return {"saved": saved, "skipped": skipped}, data

    def snapshot_load(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        if blob is None:
            raise OpError("no workspace tarball was sent", "invalid")
        names, count = workspace.restore(self.namespace, self.workdir, blob)
        return {"objects": names, "files": count}, None
