"""What minionflow knows of a protocol, in one object: its name, what it asks of the run
(which models it calls, whether it runs the supervisor's code, which model must read the
documents whole), its run state and the graph it runs. The CLI, Studio, ingest, the run,
eval and the report look a protocol up by name (``minionflow.graphs.protocols``: the four
built in, and any a package registers under the ``minionflow.protocols`` entry point).

A protocol of your own::

    from minionflow.contracts.protocol import Protocol
    from minionflow.contracts.state import RunState

    MY_PROTOCOL = Protocol(name="my-protocol", description="...", state=RunState, build=my_builder,
                           calls=frozenset({"local"}), reads_whole="local")

and in your package's pyproject.toml::

    [project.entry-points."minionflow.protocols"]
    my-protocol = "my_package.graphs:MY_PROTOCOL"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadInput
from .settings import PROTOCOL_NAME, RunSettings

Role = Literal["remote", "local"]
NAME = re.compile(PROTOCOL_NAME)


@dataclass(frozen=True)
class Protocol:
    """A protocol minionflow can run (see the module docstring).

    ``build(from_request=False)`` returns the uncompiled ``StateGraph`` over ``state`` (a
    TypedDict holding at least ``RunState``'s fields); with ``from_request`` it starts with
    the ``ingest`` step (``graphs.entry.add_entry``), for LangGraph clients. ``start``: the
    fields of the initial state beyond the shared ones (``rounds``, ``round``, ...)."""

    name: str
    description: str
    state: type
    build: Callable[..., Any]
    calls: frozenset[Role] = frozenset({"remote", "local"})
    runs_code: bool = False
    pools_local: bool = False
    reads_whole: Role | None = None
    min_rounds: int = 1
    start: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"protocol name {self.name!r}: lower-case letters, digits and dashes, a letter first")
        if not self.calls:
            raise ValueError(f"protocol {self.name!r} calls no model")
        if self.reads_whole is not None and self.reads_whole not in self.calls:
            raise ValueError(f"protocol {self.name!r}: the model that reads the documents whole is one it calls")

    def check(self, settings: RunSettings) -> None:
        """BadInput when the settings do not suit the protocol."""
        if settings.max_rounds < self.min_rounds:
            raise BadInput(f"invalid settings: the {self.name} protocol needs max_rounds >= {self.min_rounds}")
