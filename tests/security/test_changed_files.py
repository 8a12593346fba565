"""More than 10,000 changed files no longer ends a session (issue 8, item 6).

Unzipping a data set changed more files than the controller accepted in ``changedFiles``:
the reply was a protocol violation and the session was gone (410). Now the response lists
the first 1,000 names and ``changedFilesTotal`` says how many changed in all."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker

FILES = 12_000
CHANGED_FILES_MAX = 1000  # names listed (README: "Changed files")


def _data_set() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(FILES):
            archive.writestr(f"images/{i:05}.txt", str(i))
    return buffer.getvalue()


async def test_unzipping_a_data_set_keeps_the_session(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(_data_set()), filename="images.zip")
    resp = await client.post(f"/sessions/{session_id}/files", data=form, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    code = "import zipfile\nzipfile.ZipFile('images.zip').extractall('data')"
    result = await execute(client, admin_headers, session_id, code)
    assert result["success"], result["errorMessage"]
    assert result["changedFilesTotal"] == FILES
    assert len(result["changedFiles"]) == CHANGED_FILES_MAX
    assert result["changedFiles"][:2] == ["data/images/00000.txt", "data/images/00001.txt"]
    again = await execute(client, admin_headers, session_id, "len(os.listdir('data/images'))")
    assert again["success"] is False  # 'os' was never imported: the session is the same
    again = await execute(
        client, admin_headers, session_id, "import os\nlen(os.listdir('data/images'))"
    )
    assert again["consoleOutput"] == f"{FILES}\n"
    assert "changedFilesTotal" not in again and again["changedFiles"] == []


async def test_a_service_request_reports_the_total(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    code = (
        "import os\nos.makedirs('out', exist_ok=True)\n"
        "for i in range(n):\n    open(f'out/{i:05}.txt', 'w').close()"
    )
    await publish(
        client,
        admin_headers,
        "ManyFiles",
        "1",
        code=code,
        inputParameterDefinitions=[{"name": "n", "type": "integer"}],
    )
    result = await consume(client, admin_headers, "ManyFiles", "1", {"n": FILES})
    assert result["success"], result["errorMessage"]
    assert result["changedFilesTotal"] == FILES
    assert len(result["changedFiles"]) == CHANGED_FILES_MAX
    few = await consume(client, admin_headers, "ManyFiles", "1", {"n": 2})
    assert few["changedFiles"] == ["out/00000.txt", "out/00001.txt"]
    assert "changedFilesTotal" not in few


def test_an_agent_sending_the_whole_list_is_cut_not_refused() -> None:
    """An agent of an older image (a snapshot's, a service's) sends every name."""
    from controller.sessions.models import ExecuteReply, changed_files

    names = [f"f{i:06}" for i in range(25_000)]
    reply = ExecuteReply.model_validate(
        {"success": True, "error": "", "console": "", "changed_files": names, "outputs": []}
    )
    shown = changed_files(reply.changed_files, reply.changed_total)
    assert shown == {"changedFiles": names[:CHANGED_FILES_MAX], "changedFilesTotal": 25_000}
    assert changed_files(["a"], 1) == {"changedFiles": ["a"]}
    assert changed_files(["a"], 7)["changedFilesTotal"] == 7
