"""Running user code: captured console output, clean tracebacks, changed files.

Each execution compiles the code under its own pseudo file name and registers the source
with ``linecache``, so tracebacks show the user's lines, also for functions defined by an
earlier execution. When the last statement is an expression its value is shown, as in a
notebook (``1+1`` prints ``2``).
"""

from __future__ import annotations

import ast
import io
import linecache
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from o16n_agent.codec import clean_text, describe

TRUNCATED = "\n[... console output truncated: {} more characters ...]\n"
#: Names of changed files a reply carries; the total is reported beside them.
CHANGED_FILES_MAX = 1000
#: Files of the working directory whose changes are tracked (a directory walk's bound).
TRACKED_FILES_MAX = 100_000
#: Characters of an error text a reply carries (a user's exception message can be huge).
ERROR_MAX = 100_000
#: Bytes of JSON one reply may take: the controller's limit, given to the container.
REPLY_MAX = int(os.environ.get("O16N_AGENT_REPLY_MAX", "") or 64 << 20)


class CappedWriter(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        text = str.__str__(text)  # a str subclass's own methods do not run here
        room = self._limit - self._size
        if room > 0:
            kept = text[:room]
            self._parts.append(kept)
            self._size += len(kept)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        text = clean_text("".join(self._parts))
        return text + TRUNCATED.format(self.dropped) if self.dropped else text


@dataclass
class Outcome:
    success: bool = True
    error: str = ""
    console: str = ""
    cancelled: bool = False
    changed_files: list[str] = field(default_factory=list)
    changed_total: int = 0


class Runner:
    """Runs code in a namespace; ``on_state`` tells the agent when user code is running."""

    def __init__(self, workdir: str, on_state: Callable[[bool], None]) -> None:
        self.workdir = workdir
        self._on_state = on_state
        self._count = 0

    def run(self, code: str, namespace: dict[str, Any], console_limit: int) -> Outcome:
        self._count += 1
        filename = f"<execution-{self._count}>"
        outcome = Outcome()
        before = file_states(self.workdir)
        console = CappedWriter(console_limit)
        try:
            body, last = _compile(code, filename)
        except Exception as exc:  # SyntaxError, ValueError (NUL), RecursionError...
            outcome.success = False
            outcome.error = compile_error(exc)
        else:

            def execute() -> None:
                exec(body, namespace)  # noqa: S102 - running user code is the point
                if last is not None:
                    value = eval(last, namespace)  # noqa: S307
                    if value is not None:
                        print(repr(value))

            outcome.error, outcome.cancelled = run_captured(
                execute, console, self._on_state, "KeyboardInterrupt: the execution was cancelled"
            )
            outcome.success = not outcome.error
        outcome.console = console.getvalue()
        outcome.changed_files, outcome.changed_total = cap_changed(
            changed_files(before, file_states(self.workdir))
        )
        return outcome


def run_captured(
    run: Callable[[], None],
    console: CappedWriter,
    on_state: Callable[[bool], None],
    interrupted: str,
) -> tuple[str, bool]:
    """Run user code (``run``) with stdout and stderr going to ``console`` and ``on_state``
    telling the agent that user code runs. Returns ``("", False)``, or the error text (the
    user's traceback; ``interrupted`` for a ``KeyboardInterrupt``) and whether it was one."""
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = console
    try:
        on_state(True)
        try:
            run()
        finally:
            on_state(False)
    except KeyboardInterrupt:  # also one that lands just after the code ended
        return interrupted, True
    except BaseException as exc:
        return format_user_traceback(exc), False
    finally:
        sys.stdout, sys.stderr = saved
    return "", False


def compile_code(code: str, filename: str) -> Any:
    """Compile ``code`` under a pseudo file name whose source tracebacks can show. Raises
    :class:`CompileError` with the user's message when it does not compile."""
    _remember_source(code, filename)
    try:
        return compile(code, filename, "exec")
    except Exception as exc:  # SyntaxError, ValueError (NUL), RecursionError...
        raise CompileError(compile_error(exc)) from None


class CompileError(Exception):
    """User code that does not compile; the message is the user's, without agent frames."""


def compile_error(exc: Exception) -> str:
    """What the user sees for code that does not compile: ``SyntaxError: ...`` with the line,
    or, for what ``compile`` refuses otherwise (a NUL byte, nesting too deep for the parser),
    ``ValueError: ...``: never the agent's traceback."""
    text = ""
    if isinstance(exc, SyntaxError):
        try:
            text = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        except Exception:  # a SyntaxError with odd attributes: its type and message
            text = ""
    if text:
        return clip(text)
    return clip(describe(exc))


def _remember_source(code: str, filename: str) -> None:
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)


def _compile(code: str, filename: str) -> tuple[Any, Any]:
    """Compile ``code``; split off a trailing expression so its value can be shown."""
    _remember_source(code, filename)
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        statement = tree.body.pop()
        assert isinstance(statement, ast.Expr)
        expr = ast.Expression(statement.value)
        last = compile(expr, filename, "eval")
    return compile(tree, filename, "exec"), last


def format_user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame of user code on, without the agent's frames.

    User code is compiled under pseudo file names (``<execution-N>``, ``<code>``,
    ``<initCode>``); the agent's own frames come from real files and are dropped. Formatting
    runs the exception's own code (``__str__``, ``__notes__``...), so whatever that raises
    leaves just the exception's type and message; a huge text is clipped."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<"):
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    except BaseException:  # user code: SystemExit and all
        text = describe(exc)
    return clip(text)


def clip(text: str, limit: int = ERROR_MAX) -> str:
    """An error text of at most about ``limit`` characters, valid UTF-8."""
    if len(text) > limit:
        text = (
            text[: limit // 2]
            + f"\n[... {len(text) - limit} characters ...]\n"
            + text[-limit // 2 :]
        )
    return clean_text(text)


def cap_changed(names: list[str], total: int | None = None) -> tuple[list[str], int]:
    """At most :data:`CHANGED_FILES_MAX` of the changed ``names`` (the first in order), and
    how many changed in all (``total`` when the list was already cut)."""
    count = max(len(names), total or 0)
    return [clean_text(n) for n in names[:CHANGED_FILES_MAX]], count


def file_states(root: str, limit: int = TRACKED_FILES_MAX) -> dict[str, tuple[int, int]]:
    """``relative path → (mtime_ns, size)`` of regular files under ``root``, at most ``limit``
    of them; links not followed. (A service looks after every request: names are built
    from the walk's own prefixes, as ``os.path.relpath`` took microseconds per file.)"""
    states: dict[str, tuple[int, int]] = {}
    stack = [(root, "")]
    while stack and len(states) < limit:
        directory, prefix = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            _scan(prefix, entries, states, stack, limit)
    return states


def _scan(
    prefix: str,
    entries: Any,
    states: dict[str, tuple[int, int]],
    stack: list[tuple[str, str]],
    limit: int,
) -> None:
    """Add one directory's files to ``states`` (named ``prefix`` + name) and its
    subdirectories to ``stack``, entry by entry (a directory of a million files is never
    listed whole)."""
    for entry in entries:
        if len(states) >= limit:
            return
        try:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, f"{prefix}{entry.name}/"))
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                states[prefix + entry.name] = (st.st_mtime_ns, st.st_size)
        except OSError:
            continue


def changed_files(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> list[str]:
    return sorted(name for name, state in after.items() if before.get(name) != state)
