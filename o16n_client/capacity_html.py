"""The HTML report of ``o16n admin capacity``: one self-contained file (inline CSS and SVG
drawn here, no script, font or anything fetched), so it can be mailed or attached.

Everything that came from the server or the operator (service name, target, errors, input)
goes through ``html.escape``: the report must not run what a service's name or an error
message holds.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from o16n_client.capacity import fine_ms, phase_order

LINES = (("p50", "#2563eb"), ("p95", "#d97706"), ("p99", "#dc2626"))
THROUGHPUT = "#059669"
PHASE_COLOURS = {
    "auth": "#6366f1",
    "queue": "#f59e0b",
    "acquire": "#ec4899",
    "restore": "#8b5cf6",
    "exec": "#10b981",
    "encode": "#06b6d4",
}
OTHER_COLOURS = ("#84cc16", "#f97316", "#0ea5e9", "#a855f7", "#14b8a6", "#e11d48")
SERVER_REST = "#cbd5e1"  # in the server's total but in no phase it named
OUTSIDE = "#e2e8f0"  # the client's latency beyond the server's total: network, client

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f8fafc; color: #0f172a;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h1 code { font-size: 24px; background: none; padding: 0; }
h2 { font-size: 18px; margin: 36px 0 4px; }
p.sub, p.note { color: #475569; margin: 0 0 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
  gap: 12px; margin: 24px 0 8px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; padding: 14px 16px; }
.card .k { color: #64748b; font-size: 12px; text-transform: uppercase; letter-spacing: .06em; }
.card .v { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .u { color: #64748b; font-size: 13px; }
.verdict { background: #ecfdf5; border: 1px solid #a7f3d0; border-radius: 10px;
  padding: 12px 16px; margin: 16px 0; }
.verdict.none { background: #fef2f2; border-color: #fecaca; }
figure { background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; margin: 12px 0;
  padding: 12px 8px 4px; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  fill: #334155; }
svg .title { font-size: 14px; font-weight: 600; fill: #0f172a; }
svg .axis { font-size: 12px; fill: #475569; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e2e8f0;
  border-radius: 10px; overflow: hidden; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; text-align: right; border-bottom: 1px solid #eef2f7;
  white-space: nowrap; }
th { background: #f1f5f9; color: #334155; font-weight: 600; font-size: 13px; }
td.l, th.l { text-align: left; white-space: normal; }
tr.over td { background: #fff7ed; }
table.narrow { width: auto; min-width: 40%; }
div.wide { overflow-x: auto; border-radius: 10px; }
table.phases td small { display: block; color: #64748b; font-size: 12px; }
.pill { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 12px; }
.pill.ok { background: #dcfce7; color: #166534; }
.pill.over { background: #ffedd5; color: #9a3412; }
.empty { color: #64748b; background: #fff; border: 1px dashed #cbd5e1; border-radius: 10px;
  padding: 14px 16px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f1f5f9; padding: 1px 5px; border-radius: 4px; overflow-wrap: anywhere; }
footer { color: #94a3b8; font-size: 12px; margin-top: 32px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (1, 2, 2.5 or 5 times a power of 10)."""
    if not math.isfinite(top) or top <= 0:
        top = 1.0
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fine(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return fine_ms(value)
    return _num(value, 2)


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:g}"


class Plot:
    """A chart area with a categorical x axis (one slot per concurrency step)."""

    W, H = 960, 360
    LEFT, RIGHT, TOP, BOTTOM = 70, 24, 68, 56

    def __init__(self, title: str, steps: Sequence[int], y_label: str, y_top: float) -> None:
        self.title, self.steps, self.y_label = title, list(steps), y_label
        self.ticks = nice_ticks(y_top)
        self.y_max = self.ticks[-1]
        self.parts: list[str] = []

    @property
    def inner_w(self) -> float:
        return self.W - self.LEFT - self.RIGHT

    @property
    def inner_h(self) -> float:
        return self.H - self.TOP - self.BOTTOM

    def x(self, index: int) -> float:
        return self.LEFT + self.inner_w * (index + 0.5) / len(self.steps)

    def slot(self) -> float:
        return self.inner_w / len(self.steps)

    def y(self, value: float) -> float:
        return self.TOP + self.inner_h * (1 - min(value, self.y_max) / self.y_max)

    def frame(self) -> None:
        add = self.parts.append
        add(f'<text class="title" x="{self.LEFT}" y="22">{esc(self.title)}</text>')
        for tick in self.ticks:
            y = self.y(tick)
            add(
                f'<line x1="{self.LEFT}" x2="{self.W - self.RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{"#94a3b8" if tick == 0 else "#e2e8f0"}" stroke-width="1"/>'
            )
            add(
                f'<text class="axis" x="{self.LEFT - 8}" y="{y + 4:.1f}" '
                f'text-anchor="end">{_tick_label(tick)}</text>'
            )
        base = self.TOP + self.inner_h
        for i, step in enumerate(self.steps):
            x = self.x(i)
            add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 5}" stroke="#94a3b8"/>')
            add(
                f'<text class="axis" x="{x:.1f}" y="{base + 20}" text-anchor="middle">{step}</text>'
            )
        add(
            f'<text class="axis" x="{self.LEFT + self.inner_w / 2:.1f}" y="{self.H - 10}" '
            'text-anchor="middle">concurrent clients</text>'
        )
        mid = self.TOP + self.inner_h / 2
        add(
            f'<text class="axis" transform="translate(18 {mid:.1f}) rotate(-90)" '
            f'text-anchor="middle">{esc(self.y_label)}</text>'
        )

    def legend(self, items: Sequence[tuple[str, str]], dashed: Sequence[str] = ()) -> None:
        """A row of keys under the title, left-aligned with the plot."""
        x = float(self.LEFT)
        for label, colour in items:
            if label in dashed:
                self.parts.append(
                    f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="42" y2="42" stroke="{colour}" '
                    'stroke-width="2" stroke-dasharray="5 4"/>'
                )
                x += 24
            else:
                self.parts.append(
                    f'<rect x="{x:.1f}" y="36" width="12" height="12" rx="3" fill="{colour}"/>'
                )
                x += 18
            self.parts.append(f'<text x="{x:.1f}" y="46">{esc(label)}</text>')
            x += 7.2 * len(label) + 22

    def line(self, values: Sequence[float | None], colour: str, label: str) -> None:
        points = [(self.x(i), self.y(v)) for i, v in enumerate(values) if v is not None and v == v]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            self.parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5" '
                'stroke-linejoin="round" stroke-linecap="round"/>'
            )
        for (x, y), v in zip(points, [v for v in values if v is not None and v == v], strict=True):
            self.parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#fff" stroke="{colour}" '
                f'stroke-width="2.5"><title>{esc(label)}: {_num(v)}</title></circle>'
            )

    def svg(self, label: str) -> str:
        return (
            f'<svg viewBox="0 0 {self.W} {self.H}" role="img" aria-label="{esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(self.parts)}</svg>'
        )


def latency_chart(steps: list[dict[str, Any]], threshold: float | None) -> str:
    values = {key: [s["latencyMs"].get(key) for s in steps] for key, _ in LINES}
    finite = [v for vs in values.values() for v in vs if v is not None]
    top = max([*finite, threshold or 0, 1.0]) * 1.08
    plot = Plot(
        "Latency versus concurrency", [s["concurrency"] for s in steps], "latency (ms)", top
    )
    plot.frame()
    legend = [(key, colour) for key, colour in LINES]
    if threshold is not None:
        y = plot.y(threshold)
        plot.parts.append(
            f'<line x1="{plot.LEFT}" x2="{plot.W - plot.RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#64748b" stroke-width="1.5" stroke-dasharray="6 5"/>'
        )
        legend.append((f"p95 threshold {threshold:g} ms", "#64748b"))
    for key, colour in LINES:
        plot.line(values[key], colour, key)
    plot.legend(legend, dashed=[label for label, _ in legend if "threshold" in label])
    return plot.svg("latency percentiles per concurrency step")


def throughput_chart(steps: list[dict[str, Any]]) -> str:
    rps = [float(s["requestsPerSecond"]) for s in steps]
    ok = [float(s["okPerSecond"]) for s in steps]
    plot = Plot(
        "Throughput versus concurrency",
        [s["concurrency"] for s in steps],
        "requests per second",
        max([*rps, 1.0]) * 1.12,
    )
    plot.frame()
    width = min(56.0, plot.slot() * 0.5)
    base = plot.TOP + plot.inner_h
    for i, (all_, good) in enumerate(zip(rps, ok, strict=True)):
        x = plot.x(i) - width / 2
        if all_ > good:
            y = plot.y(all_)
            plot.parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{base - y:.1f}" '
                f'fill="#fca5a5" rx="3"><title>all answers: {_num(all_)} /s</title></rect>'
            )
        y = plot.y(good)
        plot.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{base - y:.1f}" '
            f'fill="{THROUGHPUT}" rx="3"><title>successful: {_num(good)} /s</title></rect>'
        )
        plot.parts.append(
            f'<text x="{plot.x(i):.1f}" y="{plot.y(all_) - 6:.1f}" text-anchor="middle">'
            f"{_num(all_, 0)}</text>"
        )
    legend = [("successful", THROUGHPUT)]
    if any(a > g for a, g in zip(rps, ok, strict=True)):
        legend.append(("not ok", "#fca5a5"))
    plot.legend(legend)
    return plot.svg("requests per second per concurrency step")


def _phase_colours(names: Sequence[str]) -> dict[str, str]:
    others = iter(OTHER_COLOURS * 4)
    return {n: PHASE_COLOURS.get(n) or next(others, "#94a3b8") for n in names}


def phase_chart(steps: list[dict[str, Any]]) -> str:
    """A stacked bar per step: the mean of each phase the server named, what else its total
    held, and what the client waited beyond it (network, the client's own work). A phase
    only some answers went through (``queue``, ``restore``) counts as 0 in the others: its
    mean over the answers that had it would overstate it."""
    names = phase_order({n for s in steps for n in s["phasesMs"]} - {"total"})
    colours = _phase_colours(names)
    stacks: list[list[tuple[str, float]]] = []
    for s in steps:
        phases = s["phasesMs"]
        timed = max(s["serverTimed"], 1)
        stack = [
            (n, float(phases[n]["mean"]) * phases[n]["count"] / timed) for n in names if n in phases
        ]
        inside = sum(v for _, v in stack)
        total = phases.get("total", {}).get("mean")
        if total is not None and total > inside:
            stack.append(("server, unnamed", total - inside))
            inside = total
        client = s["latencyMs"].get("mean")
        if client is not None and total is not None and client > inside:
            stack.append(("outside the server", client - inside))
        stacks.append(stack)
    top = max([sum(v for _, v in stack) for stack in stacks] + [1.0]) * 1.1
    plot = Plot(
        "Where the time goes (mean per request, from Server-Timing)",
        [s["concurrency"] for s in steps],
        "milliseconds",
        top,
    )
    plot.frame()
    colours |= {"server, unnamed": SERVER_REST, "outside the server": OUTSIDE}
    width = min(64.0, plot.slot() * 0.55)
    for i, stack in enumerate(stacks):
        bottom = 0.0
        for name, value in stack:
            y_top, y_bottom = plot.y(bottom + value), plot.y(bottom)
            plot.parts.append(
                f'<rect x="{plot.x(i) - width / 2:.1f}" y="{y_top:.1f}" width="{width:.1f}" '
                f'height="{max(y_bottom - y_top, 0):.1f}" fill="{colours[name]}">'
                f"<title>{esc(name)}: {_num(value, 2)} ms</title></rect>"
            )
            bottom += value
    used = [
        n
        for n in [*names, "server, unnamed", "outside the server"]
        if any(n == name for stack in stacks for name, _ in stack)
    ]
    plot.legend([(n, colours[n]) for n in used])
    return plot.svg("mean time per phase per concurrency step")


def _figures_table(steps: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>clients</th><th>requests</th><th>req/s</th><th>ok/s</th><th>not ok</th>"
        "<th>mean</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th>"
        '<th class="l">verdict</th></tr>'
    )
    rows = []
    for s in steps:
        lat = s["latencyMs"]
        not_ok = s["requests"] - s["outcomes"].get("ok", 0)
        verdict = {
            True: '<span class="pill ok">within</span>',
            False: '<span class="pill over">over</span>',
        }.get(s["passed"], "\u2013")
        rows.append(
            f'<tr class="{"over" if s["passed"] is False else ""}">'
            f"<td>{s['concurrency']}</td><td>{_num(s['requests'])}</td>"
            f"<td>{_num(s['requestsPerSecond'])}</td><td>{_num(s['okPerSecond'])}</td>"
            f"<td>{_num(not_ok)}</td>"
            + "".join(f"<td>{_num(lat.get(k))}</td>" for k in ("mean", "p50", "p90", "p95", "p99"))
            + f'<td>{_num(lat.get("max"))}</td><td class="l">{verdict}</td></tr>'
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _phase_table(steps: list[dict[str, Any]]) -> str:
    names = phase_order({n for s in steps for n in s["phasesMs"]})
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for s in steps:
        cells = []
        for n in names:
            p = s["phasesMs"].get(n)
            cells.append(
                "<td>\u2013</td>"
                if p is None
                else f"<td>{_fine(p['mean'])}<small>{_fine(p['p50'])} \u00b7 "
                f"{_fine(p['p95'])}</small></td>"
            )
        rows.append(
            f"<tr><td>{s['concurrency']}</td><td>{_num(s['serverTimed'])}</td>{''.join(cells)}</tr>"
        )
    return (
        f'<div class="wide"><table class="phases"><thead><tr><th>clients</th><th>timed</th>{head}'
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _outcomes_table(steps: list[dict[str, Any]]) -> str:
    kinds = sorted({k for s in steps for k in s["outcomes"]}, key=lambda k: (k != "ok", k))
    head = "".join(f"<th>{esc(k)}</th>" for k in kinds)
    rows = "".join(
        f"<tr><td>{s['concurrency']}</td>"
        + "".join(f"<td>{_num(s['outcomes'].get(k, 0))}</td>" for k in kinds)
        + "</tr>"
        for s in steps
    )
    errors = [
        f"<li>at {s['concurrency']} clients, {count} \u00d7 <code>{esc(text)}</code></li>"
        for s in steps
        for text, count in s["errors"].items()
    ]
    listing = f"<ul>{''.join(errors)}</ul>" if errors else ""
    return (
        f'<table class="narrow"><thead><tr><th>clients</th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>" + listing
    )


def _cards(report: dict[str, Any]) -> str:
    steps = report["steps"]
    capacity = report["capacity"]
    best = next((s for s in steps if s["concurrency"] == capacity), None)
    peak = max(steps, key=lambda s: s["okPerSecond"])
    stepped = report["settings"]["p95ThresholdMs"] is not None or len(steps) > 1
    cards = [
        ("capacity", "\u2013" if capacity is None else str(capacity), "concurrent clients")
        if stepped
        else ("clients", str(steps[0]["concurrency"]), "concurrent"),
        ("peak throughput", _num(peak["okPerSecond"]), f"ok/s at {peak['concurrency']} clients"),
        (
            "p95" if not stepped else "p95 at capacity" if best else "p95, first step",
            _num((best or steps[0])["latencyMs"].get("p95")),
            "ms",
        ),
        ("requests counted", _num(sum(s["requests"] for s in steps)), f"in {len(steps)} step(s)"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div>'
            f'<div class="u">{esc(u)}</div></div>'
            for k, v, u in cards
        )
        + "</div>"
    )


def render(report: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    steps: list[dict[str, Any]] = report["steps"]
    settings = report["settings"]
    service = f"{report['service']['name']}/{report['service']['version']}"
    threshold = settings.get("p95ThresholdMs")
    timed = any(s["phasesMs"] for s in steps)
    if timed:
        phases = (
            f"<figure>{phase_chart(steps)}</figure>"
            '<p class="note">Each phase the server reported in its <code>Server-Timing</code> '
            "header, in ms, over the answers that went through it: the mean, and under it "
            "p50 · p95; <em>timed</em> is how many answers carried the header (the chart "
            "counts a phase an answer did not go through as 0).</p>" + _phase_table(steps)
        )
    else:
        phases = (
            '<p class="empty">The answers carried no <code>Server-Timing</code> header, so '
            "there is no per-phase breakdown (a server without it, or with "
            "<code>O16N_SERVER_TIMING=off</code>).</p>"
        )
    setting_rows = [
        ("target", report["target"]),
        ("service", service),
        ("date", report["date"]),
        ("steps (clients)", ", ".join(str(s) for s in settings["steps"])),
        (
            "per step",
            f"{settings['warmupS']:g} s warm-up, then {settings['durationS']:g} s counted",
        ),
        ("p95 threshold", "none" if threshold is None else f"{threshold:g} ms"),
        ("not-ok answers allowed", f"{settings['maxErrorPercent']:g} %"),
        ("request timeout", f"{settings['requestTimeoutS']:g} s"),
        ("input", json.dumps(settings.get("input"), separators=(",", ":"))),
    ]
    settings_table = (
        "<table><tbody>"
        + "".join(
            f'<tr><th class="l">{esc(k)}</th><td class="l"><code>{esc(v)}</code></td></tr>'
            for k, v in setting_rows
        )
        + "</tbody></table>"
    )
    verdict_class = "verdict none" if report["capacity"] is None and threshold else "verdict"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Capacity of {esc(service)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Capacity of <code>{esc(service)}</code></h1>
<p class="sub">{esc(report["target"])} · {esc(report["date"])} ·
{esc(settings["durationS"])} s per step after {esc(settings["warmupS"])} s of warm-up</p>
{_cards(report)}
<div class="{verdict_class}">{esc(report["verdict"])}</div>
<h2>Latency</h2>
<p class="note">Client-side latency of every answered request, in ms.</p>
<figure>{latency_chart(steps, threshold)}</figure>
<h2>Throughput</h2>
<figure>{throughput_chart(steps)}</figure>
<h2>Per-phase breakdown</h2>
{phases}
<h2>Figures</h2>
{_figures_table(steps)}
<h2>Answers</h2>
<p class="note"><em>ok</em>: HTTP 200 with <code>success: true</code>; <em>failed</em>:
<code>success: false</code> (the service's code raised); <em>http N</em>: another status;
<em>timeout</em> and <em>error</em>: no answer.</p>
{_outcomes_table(steps)}
<h2>Settings</h2>
{settings_table}
<footer>o16n admin capacity · self-contained report: nothing in it is fetched</footer>
</main>
</body>
</html>
"""
