"""The remote budget: ``budget_tokens`` and ``budget_usd`` cap what a run may spend on the
remote model. Before each remote call the node estimates what it costs (its prompt counted
with tiktoken, its reply at the full ``remote_max_tokens``, priced at the remote rates),
and a call that would cross the budget is not made: the run ends with a final answer from
what is known (the extractive answer from the minions' outputs, a Minion's last local
reply), and the notes say so. A call that fits but leaves too little for another round
(MinionS) or turn (Minion) is made the last one: the supervisor must answer.

What was spent is read from the run's usage records (remote calls only; job-cache hits
cost nothing), so a resumed run keeps its budget (in its settings) and what it spent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minionflow.contracts.settings import RunSettings
from minionflow.contracts.state import UsageRecord
from minionflow.serving.accounting import role_totals
from minionflow.serving.context_guard import message_texts
from minionflow.serving.models import json_schema
from minionflow.serving.tokens import count_tokens
from pydantic import BaseModel


@dataclass(frozen=True)
class Cost:
    tokens: int
    usd: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.tokens + other.tokens, self.usd + other.usd)


def spent(records: Iterable[UsageRecord], settings: RunSettings) -> Cost:
    """What the remote calls among ``records`` cost, in tokens and at the remote rates
    (the run's usage totals for the remote role)."""
    remote = role_totals(records, settings.prices)["remote"]
    return Cost(remote.prompt_tokens + remote.completion_tokens, remote.cost_usd)


# what a chat request adds to its messages' text: role markers and separators per message
PER_MESSAGE = 8


def estimate(messages: list[object], settings: RunSettings, schema: type[BaseModel] | None = None) -> Cost:
    """What a remote call with these messages may cost at most: its prompt (with the
    reply's JSON schema when one is asked for: it is sent as a tool or response format),
    and a reply of the full token limit."""
    texts = message_texts(messages)
    prompt = sum(count_tokens(text) for text in texts) + PER_MESSAGE * len(texts)
    if schema is not None:
        prompt += count_tokens(json.dumps(json_schema(schema)))
    reply = settings.remote_max_tokens
    return Cost(prompt + reply, settings.prices.remote.cost(prompt, reply))


@dataclass(frozen=True)
class Budget:
    tokens: int | None
    usd: float | None
    used: Cost

    def affords(self, cost: Cost) -> bool:
        after = self.used + cost
        return ((self.tokens is None or after.tokens <= self.tokens)
                and (self.usd is None or after.usd <= self.usd))

    def describe(self, cost: Cost) -> str:
        """What is left against what a call needs, in the budget's own units."""
        parts = []
        if self.tokens is not None:
            parts.append(f"{self.used.tokens:,} of {self.tokens:,} remote tokens spent, the next call needs up to "
                         f"{cost.tokens:,}")
        if self.usd is not None:
            parts.append(f"${self.used.usd:.4f} of ${self.usd:.4f} spent, the next call up to ${cost.usd:.4f}")
        return "; ".join(parts)


def earlier_rounds(rounds: Iterable[Mapping[str, Any]]) -> Cost:
    """What the finished MinionS rounds' remote calls cost (their records say)."""
    return Cost(sum(int(r.get("remote_tokens") or 0) for r in rounds),
                sum(float(r.get("remote_usd") or 0.0) for r in rounds))


def budget(settings: RunSettings, records: Iterable[UsageRecord], earlier: Cost = Cost(0, 0.0)) -> Budget | None:
    """The run's budget with what it has spent (``records``, plus ``earlier`` spending not
    among them, such as the finished rounds' of a MinionS round), or None without one."""
    if settings.budget_tokens is None and settings.budget_usd is None:
        return None
    return Budget(settings.budget_tokens, settings.budget_usd, earlier + spent(records, settings))


__all__ = ["Budget", "Cost", "budget", "estimate", "spent"]
