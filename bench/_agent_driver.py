"""Runs inside the runtime image for ``bench.agent_cpu``: one real agent per source tree
(``/trees/<i>``), each serving the Iris service over its own Unix socket as the controller
would (``service_init``, then ``run``), driven one request at a time in blocks that
alternate between them. Prints JSON: per tree, the agent's CPU µs per request of every
block (``/proc`` schedstat, all its threads). Stdlib and the trees' own protocol only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

TREES = sys.argv[1].split(",")
BLOCK, BLOCKS, FILES = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, TREES[0])
from o16n_agent import protocol  # noqa: E402 - the first tree's; the wire format is shared

INIT = (
    "from sklearn import datasets, svm\n"
    "clf, iris = svm.SVC(), datasets.load_iris()\n"
    "names = {0: 'I. setosa', 1: 'I. versicolor', 2: 'I. virginica'}\n"
    "clf.fit(iris.data, iris.target)\n"
    + "".join(f"open('file{i}', 'w').write('x')\n" for i in range(FILES))
)
SERVICE = {
    "op": "service_init",
    "inputs": [{"name": "flower_data", "type": "vector"}],
    "outputs": [{"name": "iris_species", "type": "vector"}],
    "init_code": INIT,
    "code": "iris_species = [names[x] for x in clf.predict([flower_data])]",
}
RUN = {"op": "run", "inputs": {"flower_data": [5.1, 3.5, 1.4, 0.2]}}
ANSWER = {"iris_species": ["I. setosa"]}


class Agent:
    def __init__(self, tree: str) -> None:
        sockets, workdir = tempfile.mkdtemp(), tempfile.mkdtemp(dir="/dev/shm")
        path = os.path.join(sockets, "agent.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        start = f"import sys; sys.path.insert(0, {tree!r}); from o16n_agent.agent import main"
        argv = ["--socket", path, "--workdir", workdir]
        start += "; main(sys.argv[1:])"
        self.process = subprocess.Popen([sys.executable, "-I", "-c", start, *argv], cwd=workdir)
        self.conn, _ = listener.accept()
        protocol.recv_message(self.conn, 1 << 20, 0)  # hello
        self.last = 0
        reply = self.call(SERVICE)
        if reply.get("init_error"):
            raise SystemExit(f"{tree}: {reply['init_error']}")

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.last += 1
        protocol.send_message(self.conn, {"id": self.last, **message})
        reply, _ = protocol.recv_message(self.conn, 64 << 20, 0)
        if reply.get("id") != self.last or reply.get("ok") is not True:
            raise SystemExit(f"unexpected reply {reply}")
        return reply

    def cpu_ns(self) -> int:
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            try:
                with open(f"/proc/{self.process.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass  # a thread that ended meanwhile
        return total

    def predict(self) -> None:
        """One Iris request, its answer checked (the driver's work: not the agent's CPU)."""
        answer = self.call(RUN)
        if answer.get("outputs") != ANSWER:
            raise SystemExit(f"wrong answer {answer}")


agents = [Agent(tree) for tree in TREES]
for agent in agents:
    for _ in range(300):  # warm
        agent.predict()
blocks: list[list[float]] = [[] for _ in agents]
for _ in range(BLOCKS):
    for agent, own in zip(agents, blocks, strict=True):
        before = agent.cpu_ns()
        for _ in range(BLOCK):
            agent.predict()
        own.append((agent.cpu_ns() - before) / BLOCK / 1000)
for agent in agents:
    agent.process.terminate()
print(json.dumps({"us_per_request": blocks}))
