"""What an eval shows: per protocol, accuracy with a 95% Wilson interval, tokens,
cost, cost per correct answer, latency, savings against remote-only, and where the
wrong answers were lost (the loss funnel, evaluation.funnel); written as summary.json,
a Markdown table (summary.md), a cost-vs-accuracy plot (accuracy.png, matplotlib) and
a plot of the losses (funnel.png)."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import quantiles
from typing import IO

from pydantic import BaseModel

from .funnel import LOST_AT, SHORT, STAGES
from .runner import ItemResult

SUMMARY_JSON, SUMMARY_MD, PLOT, FUNNEL_PLOT = "summary.json", "summary.md", "accuracy.png", "funnel.png"
# the answerable questions of a protocol, by where their expected answer was lost: "right", a
# stage (evaluation.funnel.STAGES), "no answer" (the run failed or was refused) or "unknown"
# (no thread to read it from)
FUNNEL_KEYS = ("right", *STAGES, "no answer", "unknown")
Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method); None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


class ProtocolSummary(BaseModel):
    protocol: str
    items: int
    answered: int
    failed: int
    refused: int
    scored: int
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    judged: int
    judge_correct: int
    judge_accuracy: float | None
    fallback_answers: int
    remote_prompt_tokens: int
    remote_completion_tokens: int
    local_tokens: int
    cost_usd: float
    cost_per_question_usd: float
    cost_per_correct_usd: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    wall_s: float
    savings_vs_remote_only: float | None  # remote-only's cost / this protocol's cost
    savings_basis: str  # "measured" (remote-only answered every item), "estimated" (tiktoken), or a mix, or "free"
    funnel: dict[str, int] = {}  # the answerable questions by where they were lost (FUNNEL_KEYS)


class EvalSummary(BaseModel):
    suite: str
    items: int
    batch: bool
    protocols: list[ProtocolSummary]


def funnel_counts(results: list[ItemResult]) -> dict[str, int]:
    """The answerable scored questions by where their expected answer was lost (``FUNNEL_KEYS``)."""
    counts = dict.fromkeys(FUNNEL_KEYS, 0)
    for r in results:
        if r.correct is None or r.match == "abstain":
            continue
        key = "no answer" if r.status != "answered" else "unknown" if r.funnel is None else r.funnel.lost_at or "right"
        counts[key] += 1
    return counts


def summarize(suite: str, items: int, batch: bool, protocols: list[str], results: list[ItemResult]) -> EvalSummary:
    by_protocol = {p: [r for r in results if r.protocol == p] for p in protocols}
    remote_only = by_protocol.get("remote-only") or []
    rows = []
    for protocol, rs in by_protocol.items():
        scored = [r for r in rs if r.correct is not None]
        correct = sum(bool(r.correct) for r in scored)
        judged = [r for r in rs if r.judge is not None and r.judge.correct is not None]
        judge_correct = sum(bool(r.judge.correct) for r in judged if r.judge is not None)
        cost = sum(r.usage.cost_usd for r in rs)
        low, high = wilson(correct, len(scored)) if scored else (None, None)
        latencies = [r.elapsed_s for r in rs if r.status == "answered"]
        savings, basis = _savings(protocol, rs, remote_only, cost)
        rows.append(ProtocolSummary(
            protocol=protocol, items=len(rs), answered=sum(r.status == "answered" for r in rs),
            failed=sum(r.status == "failed" for r in rs), refused=sum(r.status == "refused" for r in rs),
            scored=len(scored), correct=correct, accuracy=(correct / len(scored)) if scored else None,
            ci_low=low, ci_high=high, judged=len(judged), judge_correct=judge_correct,
            judge_accuracy=(judge_correct / len(judged)) if judged else None,
            fallback_answers=sum(r.fallback for r in rs),
            remote_prompt_tokens=sum(r.usage.remote_prompt_tokens for r in rs),
            remote_completion_tokens=sum(r.usage.remote_completion_tokens for r in rs),
            local_tokens=sum(r.usage.local_prompt_tokens + r.usage.local_completion_tokens for r in rs),
            cost_usd=round(cost, 6), cost_per_question_usd=round(cost / len(rs), 6) if rs else 0.0,
            cost_per_correct_usd=round(cost / correct, 6) if correct else None,
            latency_p50_s=percentile(latencies, 50), latency_p95_s=percentile(latencies, 95),
            wall_s=round(sum(r.elapsed_s for r in rs), 1), savings_vs_remote_only=savings, savings_basis=basis,
            funnel={} if batch else funnel_counts(rs),
        ))
    return EvalSummary(suite=suite, items=items, batch=batch, protocols=rows)


def _savings(protocol: str, rs: list[ItemResult], remote_only: list[ItemResult], cost: float) -> tuple[float | None, str]:
    """What sending everything to the remote model would have cost, over this run's
    cost. Per question: what remote-only measured in this eval where it answered and
    was charged, else the tiktoken estimate (remote-only refused, failed, or was not
    run: the embedded model cannot read a long report at all)."""
    if protocol == "remote-only" or cost <= 0:
        return None, "measured" if protocol == "remote-only" else "free"
    measured = {r.item_id: r.usage.cost_usd for r in remote_only if r.status == "answered" and r.usage.cost_usd > 0}
    baseline = sum(measured.get(r.item_id, r.usage.remote_only_cost_usd) for r in rs)
    n_measured = sum(r.item_id in measured for r in rs)
    basis = "measured" if n_measured == len(rs) else "estimated" if n_measured == 0 else f"measured for {n_measured} of {len(rs)}, else estimated"
    return round(baseline / cost, 2), basis


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.4f}"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def table_rows(summary: EvalSummary) -> tuple[list[str], list[list[str]]]:
    """Column headers and rows, shared by the terminal table and the Markdown one."""
    headers = ["protocol"]
    if not summary.batch:
        headers += ["accuracy", "95% CI", "correct"]
    headers += ["remote tokens in", "remote tokens out", "local tokens", "cost", "cost / correct", "p50", "p95",
                "savings vs remote-only"]
    if any(p.judged for p in summary.protocols):
        headers.insert(4 if not summary.batch else 1, "judge")
    rows = []
    for p in summary.protocols:
        row = [p.protocol]
        if not summary.batch:
            ci = "-" if p.ci_low is None else f"{100 * p.ci_low:.0f}–{100 * (p.ci_high or 0):.0f}%"
            row += [_pct(p.accuracy), ci, f"{p.correct}/{p.scored}"]
        if any(q.judged for q in summary.protocols):
            row.append(f"{_pct(p.judge_accuracy)} ({p.judge_correct}/{p.judged})" if p.judged else "-")
        savings = "-" if p.savings_vs_remote_only is None else f"{p.savings_vs_remote_only:.1f}x ({p.savings_basis})"
        if p.savings_basis == "free":
            savings = "free"
        row += [f"{p.remote_prompt_tokens:,}", f"{p.remote_completion_tokens:,}", f"{p.local_tokens:,}", _usd(p.cost_usd),
                "-" if summary.batch else _usd(p.cost_per_correct_usd), _secs(p.latency_p50_s), _secs(p.latency_p95_s),
                savings]
        rows.append(row)
    return headers, rows


def funnel_rows(summary: EvalSummary) -> tuple[list[str], list[list[str]]]:
    """The loss funnel as a table: a row per protocol, the answerable questions it got right,
    then those lost at each stage (columns no protocol needs are left out)."""
    keys = [k for k in FUNNEL_KEYS if k == "right" or k in STAGES or any(p.funnel.get(k) for p in summary.protocols)]
    headers = ["protocol", "answerable"] + [SHORT.get(k, k) for k in keys]
    rows = [[p.protocol, str(sum(p.funnel.values()))] + [str(p.funnel.get(k, 0)) for k in keys]
            for p in summary.protocols if p.funnel]
    return headers, rows


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(summary: EvalSummary) -> str:
    headers, rows = table_rows(summary)
    lines = [f"# Eval: {summary.suite} ({summary.items} questions)", "", *_table(headers, rows)]
    lines += ["", "Cost prices the remote role at the run's price table (default: GPT-4o, $2.50 / $10 per million "
              "input / output tokens; local calls free). The 95% interval is Wilson's."]
    f_headers, f_rows = funnel_rows(summary)
    if f_rows:
        lines += ["", "## Where the wrong answers were lost", "",
                  "Each answerable question counts once: right, or at the first stage its expected answer did not "
                  "reach (`docs/answer-quality.md`).", "", *_table(f_headers, f_rows), ""]
        lines += [f"- {SHORT[stage]}: {LOST_AT[stage]}" for stage in STAGES]
    return "\n".join(lines) + "\n"


def plot(summary: EvalSummary, path: Path | IO[str], fmt: str = "png") -> None:
    """Cost per question (x) against accuracy with its 95% interval (y), one point per
    protocol; a batch (no accuracy) plots cost against median latency. ``fmt="svg"``
    (to a text stream) is the same plot for an HTML page (``minionflow report``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for p in summary.protocols:
        x = p.cost_per_question_usd
        if summary.batch:
            y, err = p.latency_p50_s or 0.0, None
        else:
            y = 100 * (p.accuracy or 0.0)
            err = [[y - 100 * (p.ci_low or 0.0)], [100 * (p.ci_high or 0.0) - y]]
        ax.errorbar([x], [y], yerr=err, fmt="o", capsize=4, label=p.protocol)
        ax.annotate(p.protocol, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel("cost per question (USD)")
    ax.set_ylabel("median latency (s)" if summary.batch else "accuracy (%, 95% Wilson interval)")
    if not summary.batch:
        ax.set_ylim(-2, 102)
    ax.set_title(f"{summary.suite}: {summary.items} questions", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format=fmt)
    plt.close(fig)


def plot_funnel(summary: EvalSummary, path: Path | IO[str], fmt: str = "png") -> bool:
    """The loss funnel, one horizontal bar per protocol: its answerable questions, right
    first, then lost at each stage in order. False (nothing drawn) without a funnel."""
    rows = [p for p in summary.protocols if p.funnel and sum(p.funnel.values())]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in FUNNEL_KEYS if any(p.funnel.get(k) for p in rows)]
    fig, ax = plt.subplots(figsize=(7.2, 1.2 + 0.5 * len(rows)), dpi=120)
    colours = plt.get_cmap("tab10")
    for i, p in enumerate(rows):
        left = 0
        for j, key in enumerate(keys):
            n = p.funnel.get(key, 0)
            if n:
                ax.barh(i, n, left=left, color="#4c9a2a" if key == "right" else colours(j % 10),
                        label=SHORT.get(key, key) if i == next(k for k, q in enumerate(rows) if q.funnel.get(key)) else None)
                ax.text(left + n / 2, i, str(n), ha="center", va="center", fontsize=8, color="white")
                left += n
    ax.set_yticks(range(len(rows)), [p.protocol for p in rows])
    ax.invert_yaxis()
    ax.set_xlabel("answerable questions: right, or where the expected answer was lost")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.45 if len(rows) < 3 else -0.25),
              frameon=False)
    ax.set_title(f"{summary.suite}: where the wrong answers were lost", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format=fmt, bbox_inches="tight")
    plt.close(fig)
    return True


def write_reports(summary: EvalSummary, out_dir: Path) -> dict[str, Path]:
    paths = {"summary": out_dir / SUMMARY_JSON, "table": out_dir / SUMMARY_MD, "plot": out_dir / PLOT}
    paths["summary"].write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["table"].write_text(markdown(summary), encoding="utf-8")
    plot(summary, paths["plot"])
    if plot_funnel(summary, out_dir / FUNNEL_PLOT):
        paths["funnel"] = out_dir / FUNNEL_PLOT
    return paths
