"""The MinionS graph: a run-level graph whose node ``round`` is a subgraph that runs
one round, as many times as the supervisor asks (at most ``max_rounds``).

    run:    START -> [ingest] -> [prelude ...] -> round -(no final answer)-> round
                                                    |
                                                    +-(final answer)-> END

    round:  START -> decompose -> sandboxed_execute -(code failed, attempts left)-> decompose
                        | (the remote budget affords no round: the final answer)
                        +-> END
                                       | (Send tasks of several jobs each)
                                       v
                              parallel_minion_map x N -> filter -> aggregate -> END

A round starts from ``RoundInput`` (settings, task, documents, the earlier rounds'
records, the scratchpad) and hands back ``RoundOutput`` (the records with its own,
the scratchpad, its model calls and notes, the final answer if any): its working
state (code, jobs, results, kept outputs) ends with it.

Steps of your own go anywhere in a round with ``after``: ``{"filter": [("rerank",
rerank_node)]}`` runs ``rerank`` between filter and aggregate, ``{"sandboxed_execute":
[("check", check_node)]}`` runs ``check`` on a round's jobs before they fan out (only
once the code has made them: a failed attempt goes straight back to decompose). An
inserted node takes ``(state, runtime)`` with ``RoundState`` and returns an update of
it, as the built-in steps do; fields a round has not reached yet are absent (a step
behind parallel_minion_map in a round without jobs finds no ``job_results``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from minionflow.contracts.errors import TRANSIENT_RETRY, BadInput
from minionflow.contracts.protocol import Protocol
from minionflow.contracts.state import MINIONS_START, JobInput, MinionsState, RoundInput, RoundOutput, RoundState
from minionflow.nodes.aggregate import aggregate
from minionflow.nodes.decompose import decompose
from minionflow.nodes.filter import filter_outputs
from minionflow.nodes.parallel_minion_map import parallel_minion_map
from minionflow.nodes.sandboxed_execute import route_jobs, sandboxed_execute
from minionflow.nodes.support.context import RunContext

from .entry import add_entry, new_builder

Node = Callable[..., dict[str, Any]]  # a function of the state returning an update
Steps = Sequence[tuple[str, Node]]

ROUND_STEPS = ("decompose", "sandboxed_execute", "parallel_minion_map", "filter", "aggregate")
# the steps a node can be inserted after (aggregate ends the round)
INSERT_AFTER = ROUND_STEPS[:-1]


def _chain(builder: StateGraph[Any], start: str, steps: Steps, *, link: bool = True) -> str:
    """Add ``steps`` in a line behind ``start`` (``link=False``: the caller routes from
    ``start`` to the first of them); the name of the last one."""
    last = start
    for i, (name, node) in enumerate(steps):
        if name in builder.nodes or name in ROUND_STEPS:
            raise BadInput(f"a round already has a step named {name!r}")
        builder.add_node(name, node)
        if link or i > 0:
            builder.add_edge(last, name)
        last = name
    return last


def round_builder(*, filter_node: Node = filter_outputs, after: Mapping[str, Steps] | None = None) -> StateGraph[Any]:
    """The uncompiled graph of one round (``RoundState``, from ``RoundInput`` to
    ``RoundOutput``). ``after`` maps a step of ``INSERT_AFTER`` to the (name, node)
    pairs to run behind it, in order."""
    after = dict(after or {})
    unknown = sorted(set(after) - set(INSERT_AFTER))
    if unknown:
        raise BadInput(f"cannot insert a step after {', '.join(unknown)}: choose among {', '.join(INSERT_AFTER)}")
    builder = StateGraph(RoundState, context_schema=RunContext, input_schema=RoundInput, output_schema=RoundOutput)
    builder.add_node("decompose", decompose, retry_policy=TRANSIENT_RETRY)
    builder.add_node("sandboxed_execute", sandboxed_execute)
    builder.add_node("parallel_minion_map", parallel_minion_map, input_schema=JobInput, retry_policy=TRANSIENT_RETRY)
    builder.add_node("filter", filter_node)
    builder.add_node("aggregate", aggregate, retry_policy=TRANSIENT_RETRY)
    builder.add_edge(START, "decompose")
    # a round the remote budget does not afford ends at decompose, with the final answer
    decompose_steps = after.get("decompose", ())
    after_decompose = decompose_steps[0][0] if decompose_steps else "sandboxed_execute"
    builder.add_conditional_edges("decompose", lambda state: END if state.get("final") else after_decompose,
                                  [after_decompose, END])
    if decompose_steps:
        builder.add_edge(_chain(builder, "decompose", decompose_steps, link=False), "sandboxed_execute")
    # Failed code goes straight back to decompose; steps inserted behind sandboxed_execute
    # run only on a round that has its jobs, and the fan-out (route_jobs) follows the last.
    execute_steps = after.get("sandboxed_execute", ())
    before_map = _chain(builder, "sandboxed_execute", execute_steps, link=False)
    after_map = _chain(builder, "parallel_minion_map", after.get("parallel_minion_map", ()))
    first_after_map = after["parallel_minion_map"][0][0] if after.get("parallel_minion_map") else "filter"
    fan_out = ["decompose", "parallel_minion_map", first_after_map]
    if execute_steps:
        first_check = execute_steps[0][0]
        builder.add_conditional_edges(
            "sandboxed_execute", lambda state: "decompose" if state.get("jobs_ref") is None else first_check,
            ["decompose", first_check],
        )
    builder.add_conditional_edges(before_map, lambda state, runtime: route_jobs(state, runtime, first_after_map), fan_out)
    builder.add_edge(after_map, "filter")
    builder.add_edge(_chain(builder, "filter", after.get("filter", ())), "aggregate")
    builder.add_edge("aggregate", END)
    return builder


def after_round(state: MinionsState) -> str:
    return END if state.get("final") else "round"


def minions_builder(*, prelude: Steps = (), filter_node: Node = filter_outputs, after: Mapping[str, Steps] | None = None,
                    from_request: bool = False) -> StateGraph[Any]:
    """The uncompiled MinionS graph, to compile as it is or to change.

    ``prelude``: (name, node) pairs run in order before the first round, e.g.
    ``[("retrieve", make_bm25_prefilter(8))]``. ``filter_node`` replaces the default
    filter (same state in and out), e.g. ``majority_vote_filter``. ``after``: steps to
    insert in every round (see the module docstring and ``round_builder``).

    It starts from an initial ``MinionsState`` (``nodes.ingest.initial_state``); with
    ``from_request`` it takes a plain-JSON ``RunRequest`` instead and starts with the
    ``ingest`` node (for graphs served to Studio and other LangGraph clients)."""
    round_graph = round_builder(filter_node=filter_node, after=after).compile(name="round")
    builder = new_builder(MinionsState, from_request)
    first = prelude[0][0] if prelude else "round"
    add_entry(builder, first, from_request=from_request, protocol=MINIONS)
    for i, (name, node) in enumerate(prelude):
        builder.add_node(name, node)
        builder.add_edge(name, prelude[i + 1][0] if i + 1 < len(prelude) else "round")
    builder.add_node("round", round_graph)
    builder.add_conditional_edges("round", after_round, ["round", END])
    return builder


MINIONS = Protocol(
    name="minions",
    description="MinionS: the supervisor's code splits the work into jobs over chunks, local models do them, "
                "the supervisor aggregates, round after round",
    state=MinionsState, build=lambda from_request=False: minions_builder(from_request=from_request),
    calls=frozenset({"remote", "local"}), runs_code=True, pools_local=True, start=MINIONS_START,
)


def build_minions_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    store: BaseStore | None = None,
    *,
    from_request: bool = False,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled MinionS graph. ``store`` holds the document and chunk texts; run it with
    ``context=RunContext(settings=...)``."""
    return minions_builder(from_request=from_request).compile(checkpointer=checkpointer, store=store, name="minions")
