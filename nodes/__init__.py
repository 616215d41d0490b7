"""The nodes (one module each), prompts, the model factory and accounting: the
building blocks of the graphs in ``minionflow.graphs``.

MinionS, the steps of a round: ``make_decompose``, ``make_sandboxed_execute`` (with
``route_jobs``, the fan-out of one ``Send`` per job), ``make_parallel_minion_map``,
``filter_outputs``, ``make_aggregate``; before them,
``make_ingest`` for graphs served to LangGraph clients. Alternatives to compose with:
``make_bm25_prefilter`` (a step before the first round), ``majority_vote_filter``
(in place of ``filter_outputs``) and ``make_rerank`` (a step between filter and aggregate). Minion: ``make_minion_remote`` /
``route_after_remote`` and ``make_minion_local``. Baselines: ``make_read_all``.
A node is a function ``(state, runtime)`` returning an update (``runtime.store``
holds the texts); ``make_*`` builds one around a ``ModelProvider``
(``DefaultModelProvider``, or your own).
"""

from minionflow.contracts.errors import TRANSIENT_RETRY

from .aggregate import make_aggregate
from .decompose import make_decompose
from .filter import filter_outputs
from .ingest import initial_state, make_ingest
from .minion_local import make_minion_local
from .minion_remote import make_minion_remote, route_after_remote
from .models import DefaultModelProvider, ModelClient, ModelProvider
from .parallel_minion_map import make_parallel_minion_map
from .read_all import make_read_all
from .rerank import make_rerank
from .retrieve import make_bm25_prefilter
from .sandboxed_execute import make_sandboxed_execute, route_jobs
from .vote import majority_vote_filter

__all__ = [
    "TRANSIENT_RETRY",
    "DefaultModelProvider",
    "ModelClient",
    "ModelProvider",
    "filter_outputs",
    "make_ingest",
    "initial_state",
    "majority_vote_filter",
    "make_aggregate",
    "make_bm25_prefilter",
    "make_decompose",
    "make_minion_local",
    "make_minion_remote",
    "make_parallel_minion_map",
    "make_read_all",
    "make_rerank",
    "make_sandboxed_execute",
    "route_jobs",
    "route_after_remote",
]
