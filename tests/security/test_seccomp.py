"""Issue 8 item 9: session and service code cannot trace or read another process.

Containers run under Docker's default seccomp profile minus ptrace, process_vm_readv /
process_vm_writev and kin (controller/runtime/docker/seccomp.json): the calls fail with EPERM
even against pid 1 (the container's init), which runs as the same uid as user code.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker

EPERM = 1
#: ptrace(PTRACE_ATTACH, 1) and process_vm_readv of pid 1 and of the agent itself, by ctypes:
#: each errno (0 where the call succeeded)
PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17

def ptrace_attach(pid):
    ctypes.set_errno(0)
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return 0
    return ctypes.get_errno()

class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def vm_read(pid):
    buf = ctypes.create_string_buffer(64)
    local = IOVec(ctypes.cast(buf, ctypes.c_void_p), 64)
    remote = IOVec(ctypes.cast(buf, ctypes.c_void_p), 64)
    ctypes.set_errno(0)
    if libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0:
        return 0
    return ctypes.get_errno()

errors = [ptrace_attach(1), vm_read(1), vm_read(os.getpid())]
"""


async def test_session_code_cannot_ptrace_or_read_process_memory(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    result = await execute(client, admin_headers, session_id, PROBE, outputParameters=["errors"])
    assert result["success"], result["errorMessage"]
    assert result["outputParameters"] == [{"name": "errors", "value": [EPERM, EPERM, EPERM]}]
    # the sandbox still runs ordinary Python: threads, processes, the data stack
    check = await execute(
        client,
        admin_headers,
        session_id,
        "import multiprocessing, numpy, pandas, sklearn.linear_model\n"
        "with multiprocessing.Pool(2) as pool:\n"
        "    squares = pool.map(abs, [-1, -2, -3])\n"
        "fit = sklearn.linear_model.LinearRegression().fit([[0], [1]], [0, 2]).coef_.tolist()",
        outputParameters=["squares", "fit"],
    )
    assert check["success"], check["errorMessage"]
    assert check["outputParameters"][0]["value"] == [1, 2, 3]


async def test_service_code_cannot_ptrace_or_read_process_memory(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    for isolation in ("shared", "fork"):
        name = f"Probe{isolation}"
        await publish(
            client,
            admin_headers,
            name,
            "1",
            code=PROBE,
            outputParameterDefinitions=[{"name": "errors", "type": "vector"}],
            isolation=isolation,
        )
        result = await consume(client, admin_headers, name, "1", {})
        assert result["success"], result["errorMessage"]
        assert result["outputParameters"] == {"errors": [EPERM, EPERM, EPERM]}
