"""MLflow's and BentoML's own servers with the quickstart's SVC: consume's further baselines.

Both come from a virtualenv of their own (``.venv-baselines``, made by ``make
bench-baselines`` from bench/baselines-requirements.txt): their dependencies would fight
the project's. The model is trained there as the quickstart trains it and saved with each
framework's API into the run's scratch directory (``mlflow.sklearn.save_model``; BentoML's
model store under ``BENTOML_HOME`` there), then served with the framework's defaults:

- ``mlflow models serve -m MODEL --env-manager local``: ``POST /invocations`` with
  ``{"inputs": [[...]]}`` answers ``{"predictions": [0]}`` (the class, 0 = I. setosa: the
  model is the SVC, without the quickstart's names);
- ``bentoml serve service:Iris``, a service whose API runs the quickstart's line:
  ``POST /predict`` with ``{"flower_data": [...]}`` answers ``{"iris_species": [...]}``.

Only telemetry is turned off (``DO_NOT_TRACK``): nothing that changes how they serve.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._server import HOST, PROJECT_ROOT, BenchError, Server, free_port

VENV = PROJECT_ROOT / ".venv-baselines"
HOW_TO_INSTALL = "`make bench-baselines` installs them (bench/baselines-requirements.txt)"

#: Run with the baselines' Python: ARGV scratch directory; trains the quickstart's SVC,
#: saves it for both frameworks, prints their versions.
SAVE = """
import json, sys
from importlib.metadata import version
from pathlib import Path
import bentoml, mlflow.sklearn
from sklearn import datasets, svm
clf, iris = svm.SVC(), datasets.load_iris()
clf.fit(iris.data, iris.target)
# requirements given: inferring them would load the model in a subprocess (about 30 s)
requirements = [f"scikit-learn=={version('scikit-learn')}"]
mlflow.sklearn.save_model(clf, str(Path(sys.argv[1]) / "mlflow-model"),
                          pip_requirements=requirements)
bentoml.sklearn.save_model("iris_clf", clf)
print(json.dumps({p: version(p) for p in ("mlflow", "bentoml", "scikit-learn")}))
"""

#: BentoML's service: the model from its store, the quickstart's line on one row.
SERVICE = """
import bentoml

names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}


@bentoml.service
class Iris:
    model = bentoml.models.BentoModel("iris_clf:latest")

    def __init__(self) -> None:
        self.clf = bentoml.sklearn.load_model(self.model)

    @bentoml.api
    def predict(self, flower_data: list[float]) -> dict:
        return {"iris_species": [names[x] for x in self.clf.predict([flower_data])]}
"""


@dataclass(frozen=True)
class Framework:
    """How one framework is served and asked: its path, request body, right answer (as
    JSON, and as the Lua patterns wrk's script checks every body with)."""

    name: str
    title: str
    path: str
    body: str
    answer: Any
    expect: tuple[str, ...]


MLFLOW = Framework(
    "mlflow",
    "MLflow",
    "/invocations",
    '{"inputs":[[5.1,3.5,1.4,0.2]]}',
    {"predictions": [0]},
    ('"predictions":%s*%[%s*0%s*%]',),
)
BENTOML = Framework(
    "bentoml",
    "BentoML",
    "/predict",
    '{"flower_data":[5.1,3.5,1.4,0.2]}',
    {"iris_species": ["I. setosa"]},
    ('"iris_species":%s*%[%s*"I%. setosa"%s*%]',),
)
FRAMEWORKS = (MLFLOW, BENTOML)


def unavailable(venv: Path) -> str | None:
    """Why the frameworks cannot run from ``venv`` (None: they can)."""
    missing = [n for n in ("python", "mlflow", "bentoml") if not (venv / "bin" / n).exists()]
    if missing:
        return f"{venv} lacks {', '.join(missing)}"
    return None


def environment(venv: Path, tmp: Path) -> dict[str, str]:
    """Ours, minus our Python's paths, with the virtualenv first on PATH (``mlflow models
    serve`` runs ``uvicorn`` from PATH) and BentoML's home in the scratch directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["BENTOML_HOME"] = str(tmp / "bentoml")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env["DO_NOT_TRACK"] = "true"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def save_models(venv: Path, tmp: Path) -> dict[str, str]:
    """Train and save the model for both; the packages' versions."""
    service = tmp / "bentoml-service"
    service.mkdir()
    (service / "service.py").write_text(SERVICE)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SAVE, str(tmp)],
        env=environment(venv, tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"saving the model for MLflow and BentoML failed:\n{done.stderr[-2000:]}")
    versions: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return versions


def start(framework: Framework, venv: Path, tmp: Path) -> Server:
    """The framework's server with its defaults, in a session of its own (its workers are
    stopped with it)."""
    port = free_port()
    bin_ = venv / "bin"
    if framework is MLFLOW:
        model = str(tmp / "mlflow-model")
        cmd = [str(bin_ / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local"]
        cmd += ["-h", HOST, "-p", str(port)]
        cwd = tmp
    else:
        cmd = [str(bin_ / "bentoml"), "serve", "service:Iris", "--host", HOST]
        cmd += ["--port", str(port)]
        cwd = tmp / "bentoml-service"
    env = environment(venv, tmp)
    log = tmp / f"{framework.name}.log"
    return Server(framework.name, cmd, env, port, log, cwd=cwd, detach=True)


def wait_answering(server: Server, framework: Framework, timeout: float = 120) -> None:
    """Until the server gives the right answer (its port opens before its workers are
    ready)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            conn.request("POST", framework.path, body=framework.body, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
            if answer.status == 200:
                if json.loads(raw) != framework.answer:
                    raise BenchError(f"{framework.title} answered a wrong body: {raw[:300]!r}")
                return
            last = f"HTTP {answer.status}: {raw[:300]!r}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.2)
    raise BenchError(f"{framework.title} did not answer right within {timeout:.0f} s: {last}")
