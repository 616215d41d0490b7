"""``minionflow report THREAD -o run.html``: one self-contained HTML page of a run that
opens offline: the graph as it ran, the rounds (code, jobs, what was kept or dropped and
why, the decision), usage and cost against the remote-only estimate, and the egress
ledger. ``minionflow report EVAL_FOLDER -o eval.html``: a finished eval's summary table
and plot. A Jinja2 template (``templates/report.html.j2``, autoescaped) with the charts as
inline SVG made here; no script, style or font is fetched from anywhere, and no script
runs but the page's own (its Content-Security-Policy names it by its hash)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup
from minionflow.evaluation.funnel import LOST_AT, SHORT, STAGES
from minionflow.evaluation.report import EvalSummary, funnel_rows, plot, plot_funnel, table_rows
from minionflow.graphs.threads import GraphView, ThreadView
from minionflow.nodes.support.outputs import classify, evidence

from minionflow import __version__

REASONS = {
    "failed": "the job failed (no usable reply)",
    "abstained": "the minion found nothing in its chunk",
    "ungrounded": "not supported by its chunk (grounding check)",
    "usable": "usable, not forwarded (a duplicate, or over the cap)",
}


def job_rows(round_view: Any) -> list[dict[str, Any]]:
    """Each job of a round with what became of its output, and why."""
    kept = {k["job_id"] for k in round_view.kept}
    results = {r["job_id"]: r for r in round_view.results}
    rows = []
    for job in round_view.jobs:
        result = results.get(job["job_id"])
        if result is None:
            status, reason = "missing", "no result (the round did not finish)"
        elif job["job_id"] in kept:
            status, reason = "kept", "forwarded to the supervisor"
        else:
            verdict = classify(result)  # type: ignore[arg-type]
            status = "dropped" if verdict == "usable" else verdict
            reason = REASONS[verdict]
            if verdict == "failed" and result.get("error"):
                reason += f": {result['error']}"
        rows.append({"job_id": job["job_id"], "chunk_id": job.get("chunk_id"), "task": job["task"], "status": status,
                     "reason": reason, "answer": (result or {}).get("answer"),
                     "citation": evidence(result) if result else None,  # type: ignore[arg-type]
                     "endpoint": (result or {}).get("endpoint"), "cached": bool(result and result["usage"] and all(
                         u.get("cache_hit") for u in result["usage"]))})
    return rows


def _contracted(graph: GraphView) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """The graph without its subgraphs' own start and end nodes (``round:__start__``): an
    edge into one goes on to where it leads."""
    inner = {n for n in graph.nodes if ":" in n and n.rsplit(":", 1)[1] in ("__start__", "__end__")}
    edges = [(s, t, c) for s, t, c in graph.edges if s in graph.nodes and t in graph.nodes]
    for node in inner:
        into = [(s, c) for s, t, c in edges if t == node]
        out = [(t, c) for s, t, c in edges if s == node]
        edges = [e for e in edges if node not in (e[0], e[1])]
        edges += [(s, t, c1 or c2) for s, c1 in into for t, c2 in out if s != t]
    return [n for n in graph.nodes if n not in inner], list(dict.fromkeys(edges))


def _layers(nodes: list[str], edges: list[tuple[str, str, bool]]) -> dict[str, int]:
    """A row for each node: the longest path to it from the start, over the edges that do
    not close a loop (such as a round asking for the next), found depth first."""
    out: dict[str, list[str]] = defaultdict(list)
    for s, t, _ in edges:
        out[s].append(t)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    for root in [n for n in nodes if n == "__start__"] + nodes:
        if root in state:
            continue
        stack = [(root, iter(out[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))
    depth = dict.fromkeys(nodes, 0)
    for _ in nodes:  # relax: longest paths in a DAG of a few dozen nodes
        for s, t, _ in edges:
            if (s, t) not in back:
                depth[t] = max(depth[t], depth[s] + 1)
    return depth


def graph_svg(graph: GraphView, ran: Counter[str]) -> Markup:
    """The graph top to bottom, a row per step on its longest path from the start, each
    step with how many times it ran; dashed arrows are conditional edges."""
    nodes, edges = _contracted(graph)
    depth = _layers(nodes, edges)
    rows: dict[int, list[str]] = defaultdict(list)
    for n in nodes:
        rows[depth[n]].append(n)
    box_w, box_h, gap_x, gap_y = 200, 44, 30, 36
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x + 80  # room for the loops
    height = len(rows) * (box_h + gap_y) + gap_y
    place: dict[str, tuple[float, float]] = {}
    for d, names in rows.items():
        row_w = len(names) * (box_w + gap_x) - gap_x
        for i, n in enumerate(names):
            place[n] = ((width - 80 - row_w) / 2 + i * (box_w + gap_x), gap_y + d * (box_h + gap_y))
    parts = [f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="the graph as it ran">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    for source, target, conditional in edges:
        (x1, y1), (x2, y2) = place[source], place[target]
        if y2 > y1:
            a, b = (x1 + box_w / 2, y1 + box_h), (x2 + box_w / 2, y2)
        else:  # back to an earlier step: out of the right side, into the right side
            a, b = (x1 + box_w, y1 + box_h / 2), (x2 + box_w, y2 + box_h / 2)
            bend = max(x1, x2) + box_w + 40
            parts.append(f'<path d="M{a[0]:.0f},{a[1]:.0f} C{bend:.0f},{a[1]:.0f} {bend:.0f},{b[1]:.0f} '
                         f'{b[0]:.0f},{b[1]:.0f}" fill="none" stroke="#555" stroke-dasharray="5,4" '
                         'marker-end="url(#arrow)"/>')
            continue
        dash = ' stroke-dasharray="5,4"' if conditional else ""
        parts.append(f'<line x1="{a[0]:.0f}" y1="{a[1]:.0f}" x2="{b[0]:.0f}" y2="{b[1]:.0f}" stroke="#555"{dash} '
                     'marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = place[n]
        step = n.rsplit(":", 1)[-1]
        times = ran.get(step, 0)
        start_end = n in ("__start__", "__end__")
        fill = "#eef" if start_end else ("#dfd" if times else "#f4f4f4")
        label = escape(step.strip("_")) + (f" ×{times}" if times and not start_end else "")
        parts.append(f'<g class="node" data-node="{escape(n)}" data-ran="{times}"><rect x="{x:.0f}" y="{y:.0f}" '
                     f'width="{box_w}" height="{box_h}" rx="8" fill="{fill}" stroke="#333"/><text x="{x + box_w / 2:.0f}" '
                     f'y="{y + box_h / 2 + 5:.0f}" text-anchor="middle" font-size="14">{label}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def cost_svg(view: ThreadView) -> Markup:
    """Bars: tokens per role, and this run's cost against sending everything remote."""
    u = view.usage
    bars = [("remote tokens", u.remote.prompt_tokens + u.remote.completion_tokens, "#4a78c2", ""),
            ("local tokens", u.local.prompt_tokens + u.local.completion_tokens, "#5aa55a", ""),
            ("remote-only tokens (est.)", u.remote_only_prompt_tokens + u.remote_only_completion_tokens, "#c2884a", ""),
            ("this run (USD)", u.total_cost_usd, "#4a78c2", "$"),
            ("remote only (USD, est.)", u.remote_only_cost_usd, "#c2884a", "$")]
    width, label_w, bar_h, gap = 640, 200, 22, 10
    parts = [f'<svg id="cost-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{len(bars) * (bar_h + gap) + gap + 16}" role="img" aria-label="usage and cost">']
    y = gap
    for group in (bars[:3], bars[3:]):
        top = max((v for _, v, _, _ in group), default=0) or 1
        for name, value, color, unit in group:
            w = (width - label_w - 120) * value / top
            shown = f"${value:.4f}" if unit else f"{int(value):,}"
            parts.append(f'<g class="bar" data-name="{escape(name)}" data-value="{value}"><text x="0" y="{y + 16}" '
                         f'font-size="13">{escape(name)}</text><rect x="{label_w}" y="{y}" width="{w:.1f}" '
                         f'height="{bar_h}" fill="{color}"/><text x="{label_w + w + 6:.1f}" y="{y + 16}" '
                         f'font-size="13">{shown}</text></g>')
            y += bar_h + gap
        y += 8
    parts.append("</svg>")
    return Markup("".join(parts))


def _render(name: str, **values: Any) -> str:
    """A page from its template. The page's Content-Security-Policy lets one script run: its
    own, named by its hash (``script_hash``), a fixed text of the template, so that a
    script that got into the page some other way (a model's text written unescaped) would
    not run."""
    source = resources.files("minionflow.cli").joinpath(f"templates/{name}").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", source, flags=re.DOTALL)
    if len(scripts) != 1 or "{{" in scripts[0] or "{%" in scripts[0]:
        raise ValueError(f"templates/{name}: a page has one <script>, of fixed text")
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode()
    template = Environment(autoescape=select_autoescape(default=True)).from_string(source)
    return str(template.render(script_hash=f"sha256-{digest}", **values))


def render_eval_report(summary: EvalSummary, folder: str) -> str:
    """The page of a finished eval: its summary table and its cost-against-accuracy plot
    (matplotlib's SVG, inline: its text is drawn as paths, so no font is fetched)."""
    headers, rows = table_rows(summary)
    svg = io.StringIO()
    plot(summary, svg, fmt="svg")
    f_headers, f_rows = funnel_rows(summary)
    funnel_svg = io.StringIO()
    drawn_funnel = _inline(funnel_svg.getvalue(), "funnel-plot") if plot_funnel(summary, funnel_svg, fmt="svg") else None
    return _render("eval.html.j2", summary=summary, headers=headers, rows=rows, folder=folder,
                   plot=_inline(svg.getvalue(), "eval-plot"), funnel_headers=f_headers, funnel_rows=f_rows,
                   funnel_plot=drawn_funnel, stages=[(SHORT[s], LOST_AT[s]) for s in STAGES],
                   version=__version__, made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _inline(drawn: str, element_id: str) -> Markup:
    """matplotlib's SVG for a page: the XML prologue and DOCTYPE are for a file of its own, and
    its ids (glyphs, clip paths: the same names in every plot) are prefixed with the element's,
    so two plots on one page do not share one."""
    drawn = drawn[drawn.index("<svg"):]
    drawn = re.sub(r'(\bid="|xlink:href="#|\bhref="#|url\(#)', lambda m: f"{m.group(1)}{element_id}-", drawn)
    return Markup(drawn.replace("<svg ", f'<svg id="{element_id}" ', 1))


def render_report(view: ThreadView, graph: GraphView) -> str:
    """The report page of a thread."""
    jobs = {r.round: job_rows(r) for r in view.rounds}
    # the model-calling steps, once per call (read_all's records name its role: read_all_remote)
    ran = Counter(call.node.removesuffix("_remote").removesuffix("_local") if call.node.startswith("read_all")
                  else call.node for call in view.calls)
    if view.rounds:  # the steps of a MinionS round: once a round, the minions once a job
        ran.update({"sandboxed_execute": len(view.rounds), "filter": len(view.rounds)})
        ran["parallel_minion_map"] = sum(len(rows) for rows in jobs.values())
    return _render(
        "report.html.j2", view=view, jobs=jobs, graph=graph_svg(graph, ran), chart=cost_svg(view), version=__version__,
        made=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        status_counts={r.round: Counter(j["status"] for j in jobs[r.round]) for r in view.rounds},
    )


__all__ = ["cost_svg", "graph_svg", "job_rows", "render_eval_report", "render_report"]
