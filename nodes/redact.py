"""redact: a step that puts placeholders for the personal data in what a round forwards to
the supervisor (``nodes.support.redaction`` says how), for a round of your own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minionflow.nodes.support.redaction import redact_outputs


def make_redact() -> Callable[..., dict[str, Any]]:
    """A ``redact`` node for a MinionS round of your own: put it behind the filter
    (``minions_builder(after={"filter": [("redact", make_redact())]})``) and the outputs
    the supervisor reads are redacted whatever the run's ``redact`` setting; the final
    answer is restored by aggregate from the run's mapping."""

    def redact(state: Any, runtime: Any = None) -> dict[str, Any]:
        kept, mapping = redact_outputs(state.get("kept") or [], state.get("redactions") or {})
        return {"kept": kept, "redactions": mapping}

    return redact
