"""Three MinionS variants built from the nodes: composition examples (README.md, docs/extending.md).
Run them with ``minionflow run DOC -q ... --graph minionflow.graphs.variants:retrieval_minions``.

They change the graph in the three ways ``minions_builder`` offers: a step before the
first round (``prelude``), a replaced step (``filter_node``), and a step inserted in
every round (``after``). Each is a function ``() -> StateGraph``: minionflow compiles it with
the run's checkpointer and store and runs it with the run's context (models, sandbox),
so checkpointing, resume, accounting and the CLI work as with the default graph.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph
from minionflow.nodes.rerank import make_rerank
from minionflow.nodes.retrieve import make_bm25_prefilter
from minionflow.nodes.vote import majority_vote_filter

from .minions import minions_builder

RETRIEVAL_TOP_K = 8
RERANK_TOP_K = 3


def retrieval_minions() -> StateGraph[Any]:
    """MinionS over the chunks BM25 ranks highest for the task (a pre-filter node)."""
    return minions_builder(prelude=[("retrieve", make_bm25_prefilter(RETRIEVAL_TOP_K))])


def majority_vote_minions() -> StateGraph[Any]:
    """MinionS whose filter keeps each task's majority answer (a replaced node)."""
    return minions_builder(filter_node=majority_vote_filter)


def reranked_minions() -> StateGraph[Any]:
    """MinionS that forwards each round's 3 best-supported outputs (a step inserted
    between filter and aggregate)."""
    return minions_builder(after={"filter": [("rerank", make_rerank(RERANK_TOP_K))]})
