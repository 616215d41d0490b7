"""The pool of local endpoints the minions' jobs run on, and the order they get them in.

``--local`` may name several endpoints (``RunSettings.local_endpoints``): Ollama on two
laptops, a vLLM box, several embedded servers (``embedded;servers=N``). Each takes up to
its ``slots`` requests at once (``;slots=N``; ``RunSettings.endpoint_slots``: the run's
``local_concurrency``, and 1 for an embedded server, which answers one request at a time,
so that more in flight would only let the server pick the order).

* **Order.** Waiting jobs get a slot in the order of their place in the round's batch.
  A semaphore wakes its waiters in no set order, and LangGraph starts a round's ``Send``
  tasks together (each runs several jobs in turn: its next job waits here), so the
  batch's chunk-major order (sandboxed_execute.chunk_major) would reach the servers
  shuffled and lose the prefix reuse it is for (benchmarks/throughput.py). A job that
  ends hands its slot to the next in line and wakes that one only: no herd of waiters
  (benchmarks/overhead.py).
* **Where.** A job goes to the endpoint with the fewest requests outstanding per slot;
  an endpoint whose last job was over the same chunk comes first (its prefix cache holds
  that chunk). When a slot frees, it goes to the first waiting job over the chunk that
  endpoint just read, else to the first job whose chunk is not being read on another
  endpoint, else to the first in line: a chunk's jobs run back to back on one endpoint.
* **Failures.** A job whose endpoint fails to answer (a transport error, 502-504) is moved:
  the endpoint is taken out and the job asks another (``fail``). A probe (``GET /models``,
  after ``probe_every_s``, then twice as long each time up to a minute) brings the
  endpoint back. The last endpoint standing is never
  taken out: its failure is raised, and the node's RetryPolicy retries the job's task (its
  jobs not done) as with a single endpoint. A pool of one therefore behaves as one endpoint always did.

Pools are process-wide (one per set of endpoints and slots), as the servers are: runs and
rounds in one process share the endpoints' slots and know which are down.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from minionflow.contracts.settings import ModelSpec, RunSettings

log = logging.getLogger(__name__)

Probe = Callable[[ModelSpec], bool]


@dataclass
class Endpoint:
    spec: ModelSpec
    slots: int
    in_flight: int = 0
    down: str | None = None  # why it was taken out; None while it is in the pool
    last_chunk: Hashable | None = None

    @property
    def free(self) -> bool:
        return self.down is None and self.in_flight < self.slots


@dataclass(order=True)
class _Waiter:
    place: int
    arrival: int
    chunk: Hashable = field(compare=False)
    turn: threading.Event = field(compare=False, default_factory=threading.Event)
    endpoint: Endpoint | None = field(compare=False, default=None)


class EndpointPool:
    def __init__(self, endpoints: list[tuple[ModelSpec, int]], probe: Probe | None = None,
                 probe_every_s: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("a pool needs at least one endpoint")
        self.endpoints = [Endpoint(spec, slots) for spec, slots in endpoints]
        self.probe = probe
        self.probe_every_s = probe_every_s
        self._waiting: list[_Waiter] = []  # a heap by place with one endpoint; scanned with several
        self._arrivals = itertools.count()
        self._lock = threading.Lock()

    @contextmanager
    def lease(self, place: int, chunk: Hashable = None) -> Iterator[ModelSpec]:
        """A slot on an endpoint for one job (its ``place`` in the round's batch, the
        ``chunk`` it reads), waiting for one in batch order; yields the endpoint's spec."""
        with self._lock:
            endpoint = self._free_for(chunk)
            waiter = None
            if endpoint is not None:
                self._assign(endpoint, chunk)
            else:
                waiter = _Waiter(place, next(self._arrivals), chunk)
                if len(self.endpoints) == 1:
                    heapq.heappush(self._waiting, waiter)
                else:
                    self._waiting.append(waiter)
        if waiter is not None:
            waiter.turn.wait()  # the job that woke it gave it its endpoint's slot
            endpoint = waiter.endpoint
        assert endpoint is not None
        try:
            yield endpoint.spec
        finally:
            with self._lock:
                endpoint.in_flight -= 1
                self._dispatch()

    def fail(self, spec: ModelSpec, reason: str) -> bool:
        """An endpoint failed to answer a job. If another endpoint is in the pool, this
        one is taken out until a probe finds it back, and the job may go elsewhere
        (True); the last one standing stays, and the caller raises (False)."""
        with self._lock:
            endpoint = next(e for e in self.endpoints if e.spec == spec)
            if endpoint.down is not None:
                return any(e.down is None for e in self.endpoints)
            if not any(e.down is None for e in self.endpoints if e is not endpoint):
                return False
            endpoint.down = reason
        log.warning("local endpoint %s failed (%s): taken out of the pool, its jobs go to the others",
                    spec.label, reason)
        if self.probe is not None:
            threading.Thread(target=self._watch, args=(endpoint,), daemon=True,
                             name=f"probe {spec.label}").start()
        return True

    def up(self) -> list[ModelSpec]:
        with self._lock:
            return [e.spec for e in self.endpoints if e.down is None]

    def _watch(self, endpoint: Endpoint) -> None:
        assert self.probe is not None
        wait = self.probe_every_s
        while True:
            time.sleep(wait)
            wait = min(wait * 2, 60.0)
            try:
                back = self.probe(endpoint.spec)
            except Exception:  # noqa: BLE001 - a probe that cannot even be made: not back yet
                log.debug("probe of %s failed", endpoint.spec.label, exc_info=True)
                back = False
            if back:
                with self._lock:
                    endpoint.down = None
                    self._dispatch()
                log.warning("local endpoint %s answers again: back in the pool", endpoint.spec.label)
                return

    # under the lock

    def _free_for(self, chunk: Hashable) -> Endpoint | None:
        free = [e for e in self.endpoints if e.free]
        if not free:
            return None
        return min(free, key=lambda e: (e.last_chunk != chunk or chunk is None, e.in_flight / e.slots))

    def _assign(self, endpoint: Endpoint, chunk: Hashable) -> None:
        endpoint.in_flight += 1
        endpoint.last_chunk = chunk

    def _dispatch(self) -> None:
        """Give free slots to waiting jobs."""
        while self._waiting:
            free = [e for e in self.endpoints if e.free]
            if not free:
                return
            endpoint = min(free, key=lambda e: e.in_flight / e.slots)
            waiter = self._next_for(endpoint)
            self._assign(endpoint, waiter.chunk)
            waiter.endpoint = endpoint
            waiter.turn.set()

    def _next_for(self, endpoint: Endpoint) -> _Waiter:
        if len(self.endpoints) == 1:
            return heapq.heappop(self._waiting)
        elsewhere = {e.last_chunk for e in self.endpoints if e is not endpoint and e.in_flight > 0}
        best = min(self._waiting, key=lambda w: (
            w.chunk != endpoint.last_chunk or w.chunk is None, w.chunk in elsewhere, w.place, w.arrival))
        self._waiting.remove(best)
        return best


_pools: dict[tuple[tuple[ModelSpec, int], ...], EndpointPool] = {}
_pools_lock = threading.Lock()


def endpoint_pool(settings: RunSettings, probe: Probe | None = None) -> EndpointPool:
    """The process-wide pool of the run's local endpoints (created on first use)."""
    key = tuple((spec, settings.endpoint_slots(spec)) for spec in settings.local_endpoints)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = EndpointPool(list(key), probe)
        return pool


__all__ = ["Endpoint", "EndpointPool", "endpoint_pool"]
