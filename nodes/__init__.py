"""The graph steps, one module each: the building blocks of the graphs in
``minionflow.graphs``. No step imports another; what they share is in
``minionflow.nodes.support`` (an import-linter contract says so).

MinionS, the steps of a round (each in the module of its name, e.g.
``minionflow.nodes.decompose.decompose``): ``decompose``, ``sandboxed_execute`` (with
``route_jobs``, the fan-out of the round's jobs as ``Send`` tasks), ``parallel_minion_map``,
``filter_outputs``, ``aggregate``; before them, ``make_ingest(protocol)`` for graphs served
to LangGraph clients. Alternatives to compose with: ``make_bm25_prefilter(top_k)`` (a
step before the first round), ``majority_vote_filter`` (in place of ``filter_outputs``),
``make_rerank(top_k)`` (a step between filter and aggregate) and ``make_redact()``. Minion:
``minion_remote`` / ``route_after_remote`` and ``minion_local``. Baselines:
``read_all_remote`` and ``read_all_local``.

A step is a function ``(state, runtime)`` returning an update: ``runtime.context`` is the
run's ``RunContext`` (its settings, the model provider, the sandbox; ``context_of``
checks it), ``runtime.store`` holds the texts. ``make_*`` builds a step the user sets a
number or a choice of.
"""

from minionflow.contracts.errors import TRANSIENT_RETRY
from minionflow.serving.models import DefaultModelProvider, ModelClient, ModelProvider

from .filter import filter_outputs
from .ingest import initial_state, make_ingest
from .minion_remote import route_after_remote
from .read_all import read_all_local, read_all_remote
from .redact import make_redact
from .rerank import make_rerank
from .retrieve import make_bm25_prefilter
from .sandboxed_execute import route_jobs
from .support.context import RunContext, context_of, store_of
from .vote import majority_vote_filter

__all__ = [
    "TRANSIENT_RETRY",
    "DefaultModelProvider",
    "ModelClient",
    "ModelProvider",
    "RunContext",
    "context_of",
    "filter_outputs",
    "initial_state",
    "majority_vote_filter",
    "make_bm25_prefilter",
    "make_ingest",
    "make_redact",
    "make_rerank",
    "read_all_local",
    "read_all_remote",
    "route_after_remote",
    "route_jobs",
    "store_of",
]
