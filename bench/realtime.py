"""Benchmark of a realtime service (issue 17) against the same model published as a Python
service, same run.

Starts a server (instance ``o16n-bench-realtime``, both services' pools fixed at
``--pool`` containers); a session trains a scikit-learn model on iris (``--model``:
``logistic``, a StandardScaler + LogisticRegression pipeline, or ``forest``, a
RandomForestClassifier of 100 trees) on a data frame of four named columns and pickles it;
then the same model is published

* as a **realtime** service: the pickle, behind the ``b"blob"`` prefix Microsoft's SDK
  sends, in ``POST /realtime-services/IrisRealtime/v1`` (converted to ONNX in a single-use
  container, scored by onnxruntime);
* as a **Python** service from the session's snapshot: input ``inputData`` and output
  ``outputData``, both ``data.frame``, with the same columns as the realtime one's (the
  label, and a probability per class), computed by ``predict_proba``.

Both answers are checked against the session's own predictions first. Then ``wrk`` on both,
interleaved over ``--rounds`` rounds (the first service alternating), every answer checked:
p50 and p90 at concurrency 1 and requests/s at ``--connections``, with requests of 1 row
and of 10 rows; then ``--bulk-n`` requests of ``--bulk-rows`` rows each (rows/s). The
report gives realtime / Python for each figure, the issue's targets (p50 ≤ 0.7x, requests/s
at c=16 ≥ 1.3x) and the runtime image's size.

    .venv/bin/python -m bench.realtime [--duration 5] [--rounds 2] [--model logistic]

Needs ``wrk``. Every container and image labelled ``o16n.instance=o16n-bench-realtime``
is removed at the end, and the server stopped, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import secrets
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api
from bench._docker import machine_line, machine_load, wait_containers_idle
from bench._server import (
    BenchError,
    Server,
    common_options,
    runtime_tag,
    say,
    start_o16n,
)
from bench._wrk import write_script, wrk, wrk_version

INSTANCE = "o16n-bench-realtime"
LABEL = f"o16n.instance={INSTANCE}"
VERSION = "v1"
#: the services, in the order of the report
NAMES = {"realtime": "IrisRealtime", "python": "IrisPython"}
TITLES = {"realtime": "realtime", "python": "Python"}
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
#: rows of iris for the 10-row request: a setosa first (the answers' check), then mixed
SAMPLE = [0, 50, 100, 1, 51, 101, 2, 52, 102, 3]
#: the issue's targets: same-run ratios realtime / Python
P50_MAX, RPS_MIN = 0.7, 1.3
#: the runtime image's size before issue 17 (onnx, onnxruntime, skl2onnx) was
IMAGE_BEFORE = 619_831_858
#: every answer: success, and the first row's label is setosa's (class 0) (Lua patterns)
EXPECT = ('"success":%s*true', '"label":%s*%[%s*0[,%]]')

MODELS = {
    "logistic": (
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))"
    ),
    "forest": (
        "from sklearn.ensemble import RandomForestClassifier\n"
        "clf = RandomForestClassifier(n_estimators=100, random_state=0)"
    ),
}
#: the session: the model trained on a data frame with named columns, its pickle, the data
SETUP = """
import base64, pickle
import pandas
from sklearn import datasets
@MODEL@
iris = datasets.load_iris()
X = pandas.DataFrame(iris.data, columns=@FEATURES@)
clf.fit(X, iris.target)
model_b64 = base64.b64encode(pickle.dumps(clf)).decode()
data = X.to_dict(orient="list")
sample = X.iloc[@SAMPLE@]
expected = {"label": clf.predict(sample).tolist(), "proba": clf.predict_proba(sample).tolist()}
"""
#: the Python service: the realtime service's columns, from one predict_proba
SERVICE_CODE = """
proba = clf.predict_proba(inputData[FEATURES])
outputData = pandas.DataFrame(proba, columns=[f"probabilities_{c}" for c in clf.classes_])
outputData.insert(0, "label", clf.classes_[proba.argmax(axis=1)])
"""
#: what wrk measures: (key, rows per request, concurrency "c1" or "cN")
LOADS = [("r1_c1", 1, "c1"), ("r10_c1", 10, "c1"), ("r1_cN", 1, "cN"), ("r10_cN", 10, "cN")]
#: figures of a wrk run whose median over the rounds is reported
MEDIAN_FIELDS = ("rps", "p50_us", "p90_us", "p99_us", "mean_us")


def frame(data: dict[str, list[float]], rows: list[int]) -> dict[str, Any]:
    """The consume body of ``rows`` of iris (indices into ``data``'s 150, wrapped around)."""
    size = len(data[FEATURES[0]])
    return {"inputData": {c: [data[c][i % size] for i in rows] for c in FEATURES}}


def multipart(model: bytes, description: str) -> tuple[bytes, str]:
    """The form Microsoft's SDK sends: ``description`` and the file part ``model`` (its
    bytes behind the SDK's ``b"blob"``); the body and its content type."""
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\n'
        f"{description}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="model"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + b"blob" + model + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def schedule(rounds: int) -> list[tuple[int, str, str]]:
    """The wrk runs, in order: (round, load key, service). In every load the first service
    alternates from one run to the next, so that a drift of the machine hits both alike."""
    runs, flip = [], 0
    for r in range(rounds):
        for key, _, _ in LOADS:
            order = ["realtime", "python"] if flip % 2 == 0 else ["python", "realtime"]
            runs += [(r, key, name) for name in order]
            flip += 1
    return runs


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each of ``MEDIAN_FIELDS`` over the rounds, the requests and failures
    summed, and the rounds themselves."""
    summary: dict[str, Any] = {"rounds": len(runs)}
    for field in MEDIAN_FIELDS:
        values = [r[field] for r in runs if field in r]
        if values:
            summary[field] = statistics.median(values)
    summary["requests"] = sum(r.get("requests", 0) for r in runs)
    summary["failures"] = sum(r.get("failures", 0) for r in runs)
    summary["runs"] = runs
    return summary


def pool(api: Api, name: str) -> dict[str, Any]:
    """``GET /services/{name}/v1/pool``, ready and busy summed over the nodes."""
    entries: list[dict[str, Any]] = api.ok("GET", f"/services/{name}/{VERSION}/pool")
    status = dict(entries[0])
    for count in ("ready", "busy"):
        status[count] = sum(int(entry[count]) for entry in entries)
    return status


def wait_pool(api: Api, name: str, timeout: float = 180) -> dict[str, Any]:
    """Until the version's pool has its initial size ready and none busy."""
    deadline = time.monotonic() + timeout
    while True:
        status = pool(api, name)
        if status["ready"] >= status["initialPoolSize"] and status["busy"] == 0:
            return status
        if time.monotonic() > deadline:
            raise BenchError(f"the pool of {name}/{VERSION} did not fill: {status}")
        time.sleep(0.1)


def first_consume(api: Api, server: Server, name: str, body: dict[str, Any]) -> float:
    """Seconds until ``POST /api/{name}/v1`` answers 200 (sent again while it is 503)."""
    started = time.perf_counter()
    while True:
        status, answer = api.call("POST", f"/api/{name}/{VERSION}", body)
        if status != 503:
            break
        server.check_alive()
    if status != 200 or not isinstance(answer, dict) or answer.get("success") is not True:
        raise BenchError(f"first consume of {name}: HTTP {status}: {str(answer)[:600]}")
    return time.perf_counter() - started


def agreement(answer: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """How a service's ``outputData`` compares with the session's own predictions: labels
    equal, the largest difference of a probability."""
    out = (answer.get("outputParameters") or {}).get("outputData") or {}
    columns = [c for c in out if c.startswith("probabilities_")]
    worst = 0.0
    for row, probabilities in enumerate(expected["proba"]):
        for column, want in zip(columns, probabilities, strict=False):
            got = out[column][row]
            worst = max(worst, math.inf if got is None else abs(got - want))
    return {
        "columns": list(out),
        "labels_equal": out.get("label") == expected["label"],
        "max_probability_diff": worst if len(columns) == len(expected["proba"][0]) else math.inf,
    }


def setup(api: Api, model: str) -> tuple[str, bytes, dict[str, Any], dict[str, Any]]:
    """The trained session's snapshot id, the model's pickle, iris as columns and the
    session's predictions of ``SAMPLE``; the session is closed."""
    code = (
        SETUP.replace("@MODEL@", MODELS[model])
        .replace("@FEATURES@", repr(FEATURES))
        .replace("@SAMPLE@", repr(SAMPLE))
    )
    session = api.session()
    try:
        values = api.execute(session, code, ["model_b64", "data", "expected"])["values"]
        api.execute(session, f"del model_b64, data, sample, expected\nFEATURES = {FEATURES!r}")
        answer = api.ok("POST", f"/sessions/{session}/snapshot", {"name": "iris model"})
    finally:
        api.call("DELETE", f"/sessions/{session}")
    pickled = base64.b64decode(values["model_b64"])
    return str(answer["snapshotId"]), pickled, values["data"], values["expected"]


def publish_realtime(api: Api, pickled: bytes) -> float:
    """Publish the pickle as the realtime service; seconds the publish took."""
    body, content_type = multipart(pickled, "iris, scored by onnxruntime")
    started = time.perf_counter()
    answer = api.response(
        "POST", f"/realtime-services/{NAMES['realtime']}/{VERSION}", body, api.headers(content_type)
    )
    raw = answer.read()
    if answer.status != 201:
        raise BenchError(f"POST /realtime-services: HTTP {answer.status}: {raw[:600]!r}")
    return time.perf_counter() - started


def publish_python(api: Api, snapshot_id: str) -> float:
    started = time.perf_counter()
    api.ok(
        "POST",
        f"/services/{NAMES['python']}/{VERSION}",
        {
            "code": SERVICE_CODE,
            "inputParameterDefinitions": [{"name": "inputData", "type": "data.frame"}],
            "outputParameterDefinitions": [{"name": "outputData", "type": "data.frame"}],
            "runtimeType": "Python",
            "snapshotId": snapshot_id,
        },
    )
    return time.perf_counter() - started


def bulk(api: Api, name: str, body: bytes, rows: int) -> float:
    """Seconds one request of ``rows`` rows took (every row answered)."""
    started = time.perf_counter()
    status, raw = api.send("POST", f"/api/{name}/{VERSION}", body)
    elapsed = time.perf_counter() - started
    answer = json.loads(raw) if status == 200 else None
    out = (answer or {}).get("outputParameters") or {}
    if not answer or answer.get("success") is not True or len(out["outputData"]["label"]) != rows:
        raise BenchError(f"{rows} rows to {name}: HTTP {status}: {raw[:400]!r}")
    return elapsed


def image_size(args: argparse.Namespace) -> dict[str, Any]:
    tag = args.image or runtime_tag(args.tree)
    done = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    size = int(done.stdout.strip()) if done.returncode == 0 else None
    return {"tag": tag, "bytes": size, "before_bytes": IMAGE_BEFORE}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL), "model": args.model}
    figures["image"] = image_size(args)
    password = "bench-" + secrets.token_urlsafe(18)
    pools = {"O16N_SERVICE_POOL_INITIAL": str(args.pool), "O16N_SERVICE_POOL_MAX": str(args.pool)}
    o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=pools)
    try:
        o16n.wait_ready()
        api = Api(o16n.url, timeout=600).login(password)
        say(f"session: training the {args.model} model, snapshot ...")
        snapshot_id, pickled, data, expected = setup(api, args.model)
        figures["pickle_bytes"] = len(pickled)
        sample = frame(data, SAMPLE)
        published: dict[str, Any] = {}
        wait_containers_idle(LABEL)
        say("publishing the realtime service ...")
        seconds = publish_realtime(api, pickled)
        published["realtime"] = {
            "publish_s": seconds,
            "first_consume_s": seconds + first_consume(api, o16n, NAMES["realtime"], sample),
        }
        wait_pool(api, NAMES["realtime"])
        wait_containers_idle(LABEL)
        say("publishing the Python service ...")
        seconds = publish_python(api, snapshot_id)
        published["python"] = {
            "publish_s": seconds,
            "first_consume_s": seconds + first_consume(api, o16n, NAMES["python"], sample),
        }
        wait_pool(api, NAMES["python"])
        api.ok("DELETE", f"/snapshots/{snapshot_id}")
        figures["published"] = published
        figures["agreement"] = {
            name: agreement(api.ok("POST", f"/api/{service}/{VERSION}", sample), expected)
            for name, service in NAMES.items()
        }
        for name, found in figures["agreement"].items():
            if not found["labels_equal"] or found["max_probability_diff"] > 1e-5:
                raise BenchError(f"the {name} service's answers differ from the model's: {found}")

        token = api.token or ""
        scripts = {}
        for key, rows, _ in LOADS:
            body = json.dumps(frame(data, SAMPLE[:rows]), separators=(",", ":"))
            scripts[key] = write_script(tmp / f"{key}.lua", "POST", token, body, EXPECT)
        urls = {name: f"{o16n.url}/api/{service}/{VERSION}" for name, service in NAMES.items()}
        concurrency = {"c1": 1, "cN": args.connections}
        for name in NAMES if args.warmup else ():  # not recorded
            say(f"{TITLES[name]}: warm-up, {args.warmup} s ...")
            wrk(urls[name], scripts["r1_cN"], args.connections, args.threads, args.warmup)
        figures["pools_before_runs"] = {name: wait_pool(api, s) for name, s in NAMES.items()}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {key: [] for key, _, _ in LOADS} for name in NAMES
        }
        for r, key, name in schedule(args.rounds):
            c = concurrency[key[-2:]]
            say(f"round {r + 1}: {TITLES[name]}, {key}, c={c}, {args.duration} s ...")
            result = wrk(
                urls[name],
                scripts[key],
                c,
                args.threads,
                args.duration,
                check_answers=True,
                fail=False,
            )
            o16n.check_alive()
            runs[name][key].append(result)
        for name in NAMES:
            figures[name] = {key: median_of(v) for key, v in runs[name].items()}

        say(f"{args.bulk_n} requests of {args.bulk_rows:,} rows to each ...")
        body = json.dumps(frame(data, list(range(args.bulk_rows))), separators=(",", ":"))
        raw = body.encode()
        times: dict[str, list[float]] = {name: [] for name in NAMES}
        for i in range(args.bulk_n + 1):  # the first of each is a warm-up
            for name in NAMES if i % 2 == 0 else reversed(NAMES):
                seconds = bulk(api, NAMES[name], raw, args.bulk_rows)
                if i:
                    times[name].append(seconds)
        for name in NAMES:
            median = statistics.median(times[name])
            figures[name]["bulk"] = {
                "rows": args.bulk_rows,
                "body_bytes": len(raw),
                "p50_s": median,
                "max_s": max(times[name]),
                "rows_per_s": args.bulk_rows / median,
                "samples_s": times[name],
            }
        figures["machine_at_end"] = machine_load(LABEL)
        for service in NAMES.values():
            api.ok("DELETE", f"/services/{service}/{VERSION}")
        return figures
    finally:
        o16n.stop()


def ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Ratios and targets into ``figures``; the report."""
    rt, py = figures["realtime"], figures["python"]
    c = args.connections
    rows: list[tuple[str, float, float, int]] = []  # label, realtime, python, digits
    ratios: dict[str, float | None] = {}
    for key, n, level in LOADS:
        what = f"{n} row{'s' if n > 1 else ''}"
        if level == "c1":
            for p in ("p50", "p90"):
                label = f"c=1, {what}, {p} (ms)"
                rows.append((label, rt[key][f"{p}_us"] / 1000, py[key][f"{p}_us"] / 1000, 3))
                ratios[f"{p}_{key}"] = ratio(rt[key][f"{p}_us"], py[key][f"{p}_us"])
        rows.append(
            (
                f"c={1 if level == 'c1' else c}, {what}, requests/s",
                rt[key]["rps"],
                py[key]["rps"],
                0,
            )
        )
        ratios[f"rps_{key}"] = ratio(rt[key]["rps"], py[key]["rps"])
    bulk_rows = rt["bulk"]["rows"]
    rows.append(
        (f"{bulk_rows:,} rows, one request (s)", rt["bulk"]["p50_s"], py["bulk"]["p50_s"], 3)
    )
    rows.append(
        (f"{bulk_rows:,} rows, rows/s", rt["bulk"]["rows_per_s"], py["bulk"]["rows_per_s"], 0)
    )
    ratios["bulk_rows_rps"] = ratio(rt["bulk"]["rows_per_s"], py["bulk"]["rows_per_s"])
    pub = figures["published"]
    rows.append(
        (
            "publish → first consume (s)",
            pub["realtime"]["first_consume_s"],
            pub["python"]["first_consume_s"],
            2,
        )
    )
    # "rps" in a name: bench.compare reads a higher figure as the better one
    figures["ratios"] = {k: v for k, v in ratios.items() if v is not None}
    figures["absolute"] = {
        "realtime_p50_r1_c1_ms": rt["r1_c1"]["p50_us"] / 1000,
        "realtime_bulk_rows_per_s": rt["bulk"]["rows_per_s"],
    }
    width = 34
    lines = [
        f"model: {figures['model']} on iris ({figures['pickle_bytes']:,}-byte pickle); pools "
        f"{args.pool}/{args.pool}; wrk {args.duration} s per run, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved round(s); {args.bulk_rows:,} rows: median of "
        f"{args.bulk_n}",
        f"  {'':{width}}{'realtime':>14}{'Python':>14}{'realtime/Python':>17}",
    ]
    for label, mine, theirs, digits in rows:
        times = ratio(mine, theirs)
        lines.append(
            f"  {label:{width}}{mine:>14,.{digits}f}{theirs:>14,.{digits}f}"
            + (f"{times:>16.2f}x" if times is not None else f"{'-':>17}")
        )
    failures = {name: sum(figures[name][k]["failures"] for k, _, _ in LOADS) for name in NAMES}
    lines.append("  failed requests: " + ", ".join(f"{TITLES[n]} {f}" for n, f in failures.items()))
    for name, found in figures["agreement"].items():
        lines.append(
            f"{TITLES[name]} answers vs the session's predict_proba ({len(SAMPLE)} rows): labels "
            f"{'equal' if found['labels_equal'] else 'DIFFER'}, largest probability difference "
            f"{found['max_probability_diff']:.2e}; columns {', '.join(found['columns'])}"
        )
    image = figures["image"]
    if image["bytes"] is not None:
        grown = image["bytes"] - image["before_bytes"]
        lines.append(
            f"runtime image {image['tag']}: {image['bytes']:,} bytes (before issue 17: "
            f"{image['before_bytes']:,}; +{grown:,}, +{grown / image['before_bytes']:.1%})"
        )
    else:
        lines.append(f"runtime image {image['tag']}: not found by docker image inspect")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    checks = []
    for key, n, _ in LOADS[:2]:
        value = ratios[f"p50_{key}"] or math.inf
        checks.append((f"p50 at c=1, {n} row(s) <= {P50_MAX} x Python", value, value <= P50_MAX))
    for key, n, _ in LOADS[2:]:
        value = ratios[f"rps_{key}"] or 0.0
        checks.append(
            (f"requests/s at c={c}, {n} row(s) >= {RPS_MIN} x Python", value, value >= RPS_MIN)
        )
    checks.append(
        ("no failed requests (realtime)", failures["realtime"], failures["realtime"] == 0)
    )
    figures["targets"] = [{"target": t, "value": v, "pass": p} for t, v, p in checks]
    lines += [f"{'PASS' if p else 'MISS'}  {t}: {v:.3f}" for t, v, p in checks]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="logistic")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per service")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16, help="the higher concurrency")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--pool", type=int, default=4, help="containers per service")
    parser.add_argument("--bulk-rows", type=int, default=10_000)
    parser.add_argument("--bulk-n", type=int, default=5)
    common_options(parser)
    args = parser.parse_args(argv)
    counts = (args.duration, args.rounds, args.connections, args.threads, args.pool)
    if min(counts) < 1 or args.bulk_rows < 10 or args.bulk_n < 1 or args.warmup < 0:
        parser.error(
            "--duration, --rounds, --connections, --threads, --pool, --bulk-n must be >= 1, "
            "--bulk-rows >= 10, --warmup >= 0"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the Python service's image is a tag of the snapshot's image, which carries the label
    return run_bench(
        "realtime",
        args,
        run,
        summarise,
        labels=[LABEL],
        tools=["wrk", "docker"],
        images=True,
        wrk=wrk_version(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
