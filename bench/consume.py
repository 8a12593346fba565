"""Benchmark of consuming a published web service (the seed's Iris SVC) against an
in-process aiohttp server doing the same predict, same run.

Starts its own o16n server (``python -m controller serve``, fresh data dir under /tmp, free
port, random admin password, instance ``o16n-bench-consume``, service pools of
``--pool-initial`` / ``--pool-max`` containers), logs in, and does the Iris workflow of
Microsoft's Python quickstart over REST: a session, two executes (imports; train an SVC on
iris), a snapshot, and publishing ``Iris/V1.0`` whose code is
``iris_species = [names[x] for x in clf.predict([flower_data])]``. Then:

1. publish → first consume: from sending ``POST /services/Iris/V1.<i>`` to the first
   successful ``POST /api/Iris/V1.<i>`` answer (retried at once while it is 503), for
   ``--n`` fresh versions;
2. ``wrk`` against ``POST /api/Iris/V1.0`` at concurrency 1 and ``--connections``, and the
   same loads against the baseline: one aiohttp process that trained the same SVC at start
   and answers each request with the same predict and the same JSON shape; runs interleaved;
3. for context, how long ``clf.predict([x])`` itself takes in-process.

    .venv/bin/python -m bench.consume [--duration 10] [--n 5] [--connections 16]
                                      [--pool-initial 2] [--pool-max 2] [--image TAG]

Needs ``wrk`` (``apt-get install -y wrk``). Writes bench/results/consume-<timestamp>.json.
Every container labelled ``o16n.instance=o16n-bench-consume`` and every image carrying
that label is removed at the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench._docker import machine_load, preflight, scratch_dir
from bench._server import (
    BenchError,
    Server,
    cpu_seconds,
    failed,
    finish,
    interrupt_on_sigterm,
    login,
    percentile,
    run_meta,
    start_app,
    start_o16n,
)
from bench._wrk import write_script, wrk, wrk_version

INSTANCE = "o16n-bench-consume"
LABEL = f"o16n.instance={INSTANCE}"
SERVICE = "Iris"
WRK_VERSION = "V1.0"  # the version wrk loads (the first one published)
INPUT = {"flower_data": [5.1, 3.5, 1.4, 0.2]}
EXPECTED = ["I. setosa"]

# the targets
TARGET_RPS_RATIO = 1.0  # requests/s at --connections, o16n / in-process baseline, at least
TARGET_P50_C1_MS = 0.6  # p50 latency at concurrency 1, at most
TARGET_FIRST_CONSUME_S = 2.0  # publish → first successful consume, every sample, at most

#: The seed's session code (Microsoft's Python quickstart), in two executes.
SETUP_CODE = (
    "from sklearn import svm\nfrom sklearn import datasets",
    "clf=svm.SVC()\niris=datasets.load_iris()\n"
    "names={0:'I. setosa',1:'I. versicolor',2:'I. virginica'}\n"
    "clf.fit(iris.data, iris.target)",
)
#: The seed's service code, with the 2-D input modern scikit-learn requires.
SERVICE_CODE = "iris_species = [names[x] for x in clf.predict([flower_data])]"

#: The baseline: one process, one event loop; the same SVC trained at start, the same
#: predict per request, the same WebServiceResult shape, serialised the way o16n does.
BASELINE_APP = """
import json
import sys

from aiohttp import web
from sklearn import datasets, svm

clf = svm.SVC()
iris = datasets.load_iris()
names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}
clf.fit(iris.data, iris.target)


async def consume(request):
    body = await request.json()
    flower_data = body["flower_data"]
    iris_species = [names[x] for x in clf.predict([flower_data])]
    result = {
        "success": True,
        "errorMessage": "",
        "consoleOutput": "",
        "changedFiles": [],
        "outputParameters": {"iris_species": iris_species},
        "outputFiles": {},
    }
    return web.Response(
        text=json.dumps(result, separators=(",", ":")), content_type="application/json"
    )


app = web.Application()
app.router.add_post("/api/Iris/V1.0", consume)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""

#: For context: clf.predict([x]) alone, in a fresh process (median of single calls).
PREDICT_TIMING = """
import json
import statistics
import sys
import time

from sklearn import datasets, svm

calls = int(sys.argv[1])
clf = svm.SVC()
iris = datasets.load_iris()
names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}
clf.fit(iris.data, iris.target)
x = [5.1, 3.5, 1.4, 0.2]
for _ in range(200):
    clf.predict([x])
predict, code = [], []
for _ in range(calls):
    started = time.perf_counter_ns()
    clf.predict([x])
    predict.append(time.perf_counter_ns() - started)
for _ in range(calls):
    started = time.perf_counter_ns()
    iris_species = [names[v] for v in clf.predict([x])]
    code.append(time.perf_counter_ns() - started)
print(json.dumps({
    "calls": calls,
    "predict_median_us": statistics.median(predict) / 1000,
    "predict_p90_us": statistics.quantiles(predict, n=10)[-1] / 1000,
    "service_code_median_us": statistics.median(code) / 1000,
    "answer": iris_species,
}))
"""

#: wrk script: POST the Iris input with the bearer token; count every answer that is not
#: 200, and every 200 whose body lacks success true and iris_species ["I. setosa"]; print a
#: machine-readable summary. (@BODY@ and @TOKEN@ are replaced before use.)
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '@BODY@'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer @TOKEN@"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  badbody = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif not (string.find(body, '"success":%s*true')
              and string.find(body, '"iris_species":%s*%[%s*"I%. setosa"%s*%]')) then
    badbody = badbody + 1
  end
end

function done(summary, latency, requests)
  local n, b = 0, 0
  for _, thread in ipairs(threads) do
    n = n + thread:get("non200")
    b = b + thread:get("badbody")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
    .. '"non200":%d,"bad_body":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, n, b,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# --- HTTP ---------------------------------------------------------------------------------


def call(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 120
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON answer (text if it is not JSON)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        raise BenchError(f"{method} {url}: {exc}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def ok(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    status, answer = call(method, url, body, token)
    if status not in (200, 201):
        raise BenchError(f"{method} {url}: HTTP {status}: {str(answer)[:400]}")
    return answer


def check_answer(answer: Any, where: str) -> None:
    if not (
        isinstance(answer, dict)
        and answer.get("success") is True
        and answer.get("outputParameters", {}).get("iris_species") == EXPECTED
    ):
        raise BenchError(f"{where}: unexpected answer {str(answer)[:400]}")


# --- the Iris workflow --------------------------------------------------------------------


def publish_body(snapshot_id: str) -> dict[str, Any]:
    return {
        "code": SERVICE_CODE,
        "inputParameterDefinitions": [{"name": "flower_data", "type": "vector"}],
        "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}],
        "runtimeType": "Python",
        "snapshotId": snapshot_id,
    }


def iris_snapshot(url: str, token: str) -> tuple[str, dict[str, float]]:
    """Session, the two executes, snapshot; the session is closed afterwards."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    session = ok("POST", f"{url}/sessions", {"runtimeType": "Python"}, token)["sessionId"]
    timings["create_session_s"] = time.perf_counter() - started
    try:
        for i, code in enumerate(SETUP_CODE):
            started = time.perf_counter()
            result = ok("POST", f"{url}/sessions/{session}/execute", {"code": code}, token)
            timings[f"execute_{i + 1}_s"] = time.perf_counter() - started
            if result.get("success") is not True:
                raise BenchError(f"execute {i + 1} failed: {result.get('errorMessage')}")
        started = time.perf_counter()
        answer = ok("POST", f"{url}/sessions/{session}/snapshot", {"name": "Iris Snapshot"}, token)
        timings["snapshot_s"] = time.perf_counter() - started
    finally:
        call("DELETE", f"{url}/sessions/{session}", token=token)
    return str(answer["snapshotId"]), timings


def wait_pool_full(
    url: str, token: str, version: str, size: int, timeout: float = 180, fatal: bool = True
) -> bool:
    """Until the version's pool has ``size`` idle containers and none busy; False (or an
    error, if ``fatal``) when that does not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status = ok("GET", f"{url}/services/{SERVICE}/{version}/pool", token=token)[0]
        if status["ready"] >= size and status["busy"] == 0:
            return True
        if time.monotonic() > deadline:
            if fatal:
                raise BenchError(f"the pool of {SERVICE}/{version} did not fill: {status}")
            return False
        time.sleep(0.1)


def publish_to_first_consume(
    server: Server, token: str, snapshot_id: str, version: str
) -> dict[str, Any]:
    """Seconds from sending the publish request to the first successful consume answer."""
    url = server.url
    started = time.perf_counter()
    ok("POST", f"{url}/services/{SERVICE}/{version}", publish_body(snapshot_id), token)
    published = time.perf_counter() - started
    attempts = 0
    while True:
        attempts += 1
        status, answer = call("POST", f"{url}/api/{SERVICE}/{version}", INPUT, token)
        if status != 503:
            break
        server.check_alive()
    elapsed = time.perf_counter() - started
    if status != 200:
        raise BenchError(f"first consume of {version}: HTTP {status}: {str(answer)[:400]}")
    check_answer(answer, f"first consume of {version}")
    return {
        "version": version,
        "first_consume_s": elapsed,
        "publish_answer_s": published,
        "attempts": attempts,
    }


# --- load ---------------------------------------------------------------------------------


def container_ids() -> list[str]:
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            # every container of the instance: a service container taken from the warm
            # pool keeps its warm labels, and idle spares add next to nothing
            f"label={LABEL}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split()


def containers_cpu(ids: list[str]) -> float | None:
    """CPU seconds the given containers used so far, from their cgroups (v1 or v2)."""
    total = 0.0
    for cid in ids:
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = [
            Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"),
            Path(f"/sys/fs/cgroup/docker/{cid}/cpu.stat"),
        ]
        if v1.exists():
            total += int(v1.read_text()) / 1e9
            continue
        for path in v2:
            if path.exists():
                for line in path.read_text().splitlines():
                    if line.startswith("usage_usec "):
                        total += int(line.split()[1]) / 1e6
                break
        else:
            return None
    return total


def measured(
    server: Server,
    url: str,
    script: Path,
    connections: int,
    args: argparse.Namespace,
    containers: list[str],
) -> dict[str, Any]:
    """A wrk run, plus the CPU the server process (and o16n's containers) used per request."""
    cpu_before = cpu_seconds(server.pid)
    in_containers = containers_cpu(containers)
    result = wrk(url, script, connections, args.threads, args.duration, check_answers=True)
    result["threads"] = min(args.threads, connections)
    server.check_alive()
    requests = max(result["requests"], 1)
    result["server_cpu_us_per_request"] = (cpu_seconds(server.pid) - cpu_before) / requests * 1e6
    after = containers_cpu(containers)
    if containers and in_containers is not None and after is not None:
        result["containers_cpu_us_per_request"] = (after - in_containers) / requests * 1e6
    return result


def predict_timing(calls: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PREDICT_TIMING, str(calls)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"timing clf.predict failed:\n{done.stderr[-2000:]}")
    timing: dict[str, Any] = json.loads(done.stdout)
    if timing["answer"] != EXPECTED:
        raise BenchError(f"in-process predict answered {timing['answer']!r}")
    return timing


# --- run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    print("  timing clf.predict in-process ...", file=sys.stderr, flush=True)
    figures["predict_in_process"] = predict_timing(args.predict_calls)

    password = "bench-" + secrets.token_urlsafe(18)
    env = {
        "O16N_SERVICE_POOL_INITIAL": str(args.pool_initial),
        "O16N_SERVICE_POOL_MAX": str(args.pool_max),
    }
    servers: list[Server] = []
    try:
        o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, env=env)
        servers.append(o16n)
        baseline = start_app(tmp, "baseline", BASELINE_APP)
        servers.append(baseline)
        for server in servers:
            server.wait_ready()
        token = login(o16n, password)

        print("  Iris session, executes, snapshot ...", file=sys.stderr, flush=True)
        snapshot_id, figures["setup"] = iris_snapshot(o16n.url, token)

        samples: list[dict[str, Any]] = []
        for i in range(args.n):
            version = f"V1.{i}"
            sample = publish_to_first_consume(o16n, token, snapshot_id, version)
            samples.append(sample)
            print(
                f"  publish → first consume {version}: {sample['first_consume_s']:.3f} s "
                f"(publish answered in {sample['publish_answer_s'] * 1000:.0f} ms)",
                file=sys.stderr,
                flush=True,
            )
            # the next sample starts with nothing starting in the background
            wait_pool_full(o16n.url, token, version, args.pool_initial)
        first = [s["first_consume_s"] for s in samples]
        figures["publish_first_consume"] = {
            "p50_s": percentile(first, 50),
            "max_s": max(first),
            "min_s": min(first),
            "samples": samples,
        }
        # only the loaded version keeps containers; the snapshot is no longer needed
        for sample in samples:
            if sample["version"] != WRK_VERSION:
                ok("DELETE", f"{o16n.url}/services/{SERVICE}/{sample['version']}", token=token)
        ok("DELETE", f"{o16n.url}/snapshots/{snapshot_id}", token=token)
        wait_pool_full(o16n.url, token, WRK_VERSION, args.pool_initial)

        targets = {"o16n": o16n, "baseline": baseline}
        urls = {
            name: f"{server.url}/api/{SERVICE}/{WRK_VERSION}" for name, server in targets.items()
        }
        for name in targets:  # a few answers checked in full
            for _ in range(3):
                check_answer(ok("POST", urls[name], INPUT, token), name)
        figures["o16n_answer"] = ok("POST", urls["o16n"], INPUT, token)

        script = tmp / "consume.lua"
        body = json.dumps(INPUT, separators=(",", ":"))
        write_script(script, WRK_SCRIPT.replace("@BODY@", body).replace("@TOKEN@", token))
        if args.warmup:
            for name in targets:  # not recorded
                print(f"  {name}: warm-up, {args.warmup} s ...", file=sys.stderr, flush=True)
                wrk(
                    urls[name],
                    script,
                    args.connections,
                    args.threads,
                    args.warmup,
                    check_answers=True,
                )
        # a pool that may grow has grown during the warm-up: let its new containers finish
        # starting (restoring the workspace imports scikit-learn, seconds of CPU) first
        grown = min(args.pool_max, args.connections) if args.warmup else args.pool_initial
        figures["pool_grown_before_runs"] = wait_pool_full(
            o16n.url, token, WRK_VERSION, grown, fatal=False
        )

        figures["o16n"], figures["baseline"] = {}, {}
        # interleaved, the first server alternating, so that drift hits both alike
        order = [("c1", 1, ("o16n", "baseline")), ("cN", args.connections, ("baseline", "o16n"))]
        for key, connections, names in order:
            for name in names:
                print(
                    f"  {name}: c={connections}, {args.duration} s ...",
                    file=sys.stderr,
                    flush=True,
                )
                containers = container_ids() if name == "o16n" else []
                figures[name][key] = measured(
                    targets[name], urls[name], script, connections, args, containers
                )
                if containers:
                    figures[name][key]["service_containers"] = len(containers)
        for name in targets:  # and after the load
            check_answer(ok("POST", urls[name], INPUT, token), name)
        figures["pool_after"] = ok(
            "GET", f"{o16n.url}/services/{SERVICE}/{WRK_VERSION}/pool", token=token
        )[0]
        figures["machine_at_end"] = machine_load(LABEL)
        # the server removes the version's containers and image tag itself
        ok("DELETE", f"{o16n.url}/services/{SERVICE}/{WRK_VERSION}", token=token)
        return figures
    finally:
        for server in servers:
            server.stop()


# --- report -------------------------------------------------------------------------------


def verdicts(figures: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    o16n, base = figures["o16n"], figures["baseline"]
    ratio = o16n["cN"]["rps"] / base["cN"]["rps"]
    p50 = o16n["c1"]["p50_us"] / 1000
    first = figures["publish_first_consume"]
    return [
        {
            "target": f"requests/s at c={args.connections} >= {TARGET_RPS_RATIO:g} x in-process",
            "value": ratio,
            "pass": ratio >= TARGET_RPS_RATIO,
            "shown": f"{ratio:.2f} x ({o16n['cN']['rps']:.0f} vs {base['cN']['rps']:.0f} /s)",
        },
        {
            "target": f"p50 latency at c=1 <= {TARGET_P50_C1_MS:g} ms",
            "value": p50,
            "pass": p50 <= TARGET_P50_C1_MS,
            "shown": f"{p50:.3f} ms",
        },
        {
            "target": f"publish -> first consume <= {TARGET_FIRST_CONSUME_S:g} s (every sample)",
            "value": first["max_s"],
            "pass": first["max_s"] <= TARGET_FIRST_CONSUME_S,
            "shown": f"max {first['max_s']:.3f} s, p50 {first['p50_s']:.3f} s",
        },
    ]


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    o16n, base = figures["o16n"], figures["baseline"]
    c = args.connections
    rows: list[tuple[str, float, float]] = []
    for key, n in (("c1", 1), ("cN", c)):
        for pct in (50, 90, 99):
            mine, theirs = o16n[key][f"p{pct}_us"] / 1000, base[key][f"p{pct}_us"] / 1000
            rows.append((f"p{pct} latency, c={n} (ms)", mine, theirs))
        rows.append((f"requests/s, c={n}", o16n[key]["rps"], base[key]["rps"]))
        rows.append(
            (
                f"server CPU/request, c={n} (µs)",
                o16n[key]["server_cpu_us_per_request"],
                base[key]["server_cpu_us_per_request"],
            )
        )
    lines = [
        f"POST /api/{SERVICE}/{WRK_VERSION} (Iris SVC, pool {args.pool_initial}/{args.pool_max}) "
        f"vs in-process aiohttp + same SVC — wrk, {args.duration} s per run, "
        f"{args.threads} wrk thread(s), {os.cpu_count()} cores",
        f"{'':32}{'o16n':>12}{'baseline':>12}{'o16n/base':>12}",
    ]
    for label, mine, theirs in rows:
        lines.append(f"{label:32}{mine:12.3f}{theirs:12.3f}{mine / theirs:12.2f}")
    for key, n in (("c1", 1), ("cN", c)):
        if "containers_cpu_us_per_request" in o16n[key]:
            lines.append(
                f"{f'o16n containers CPU/req, c={n} (µs)':32}"
                f"{o16n[key]['containers_cpu_us_per_request']:12.3f}"
            )
    lines.append("ratio o16n/base: > 1 is slower for latency and CPU, < 1 is slower for requests/s")
    first = figures["publish_first_consume"]
    samples = ", ".join(f"{s['first_consume_s']:.3f}" for s in first["samples"])
    lines.append(
        f"publish → first consume (s), n={len(first['samples'])}: p50 {first['p50_s']:.3f}, "
        f"max {first['max_s']:.3f} ({samples})"
    )
    timing = figures["predict_in_process"]
    lines.append(
        f"in-process, for context: clf.predict([x]) median {timing['predict_median_us']:.1f} µs, "
        f"the service's code line {timing['service_code_median_us']:.1f} µs "
        f"({timing['calls']} calls each)"
    )
    setup = figures["setup"]
    lines.append(
        "setup (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in setup.items())
    )
    start, end = figures["machine_at_start"], figures["machine_at_end"]
    lines.append(
        f"machine: load average {start['load_1min']:.2f} at start, {end['load_1min']:.2f} at "
        f"end; {start['other_containers']} / {end['other_containers']} containers of others"
    )
    for verdict in figures["targets"]:
        mark = "PASS" if verdict["pass"] else "MISS"
        lines.append(f"{mark}  {verdict['target']}: {verdict['shown']}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server (3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency of the rps run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (this box: 2 cores)")
    parser.add_argument("--n", type=int, default=5, help="versions published and timed (5)")
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument(
        "--predict-calls", type=int, default=2000, help="in-process predict calls timed (2000)"
    )
    parser.add_argument(
        "--image", help="O16N_RUNTIME_IMAGE for the server (default: the tag of runtime_image/)"
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.n, args.predict_calls) < 1:
        parser.error("--duration, --connections, --threads, --n, --predict-calls must be >= 1")
    if args.warmup < 0 or args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need --warmup >= 0 and 1 <= --pool-initial <= --pool-max")
    if (unable := preflight("consume", ["wrk", "docker"], args.image)) is not None:
        return unable

    interrupt_on_sigterm()  # clean up on SIGTERM too
    try:
        # service images are tags of the snapshot's committed image, which carries the
        # label, so removing it by id removes them too
        with scratch_dir("consume", [LABEL], images=True) as tmp:
            figures = run(args, tmp)
    except (BenchError, KeyboardInterrupt) as exc:
        return failed("consume", exc)

    o16n, base = figures["o16n"], figures["baseline"]
    figures["ratios"] = {
        f"{stat}_{key}": o16n[key][f"{stat}_us"] / base[key][f"{stat}_us"]
        for key in ("c1", "cN")
        for stat in ("p50", "p90", "p99")
    }
    figures["ratios"]["rps_c1"] = o16n["c1"]["rps"] / base["c1"]["rps"]
    figures["ratios"]["rps_cN"] = o16n["cN"]["rps"] / base["cN"]["rps"]
    figures["targets"] = verdicts(figures, args)
    figures["meta"] = run_meta(
        "consume",
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        wrk_threads=args.threads,
        n=args.n,
        pool_initial=args.pool_initial,
        pool_max=args.pool_max,
        runtime_image=args.image,
        wrk=wrk_version(),
    )
    return finish("consume", figures, report(figures, args))


if __name__ == "__main__":
    raise SystemExit(main())
