"""The MinionS nodes (one module each), prompts, the model factory and accounting."""

from .aggregate import make_aggregate, route_after_aggregate
from .decompose import make_decompose
from .filter import filter_outputs
from .models import DefaultModelProvider, ModelClient, ModelProvider
from .parallel_minion_map import make_parallel_minion_map
from .retry_round import retry_round
from .sandboxed_execute import fan_out, make_sandboxed_execute

__all__ = [
    "DefaultModelProvider",
    "ModelClient",
    "ModelProvider",
    "fan_out",
    "filter_outputs",
    "make_aggregate",
    "make_decompose",
    "make_parallel_minion_map",
    "make_sandboxed_execute",
    "retry_round",
    "route_after_aggregate",
]
