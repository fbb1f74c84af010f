"""R1: httptools, the running request is not told the client left.

No upstream fix or issue.  Broken in every httptools release from 0.2.21
(the first that queues pipelined requests in ``self.pipeline``) to the
newest studied; h11 is not affected.

``self.cycle`` is the newest parsed request.  With a request queued behind
the running one, ``connection_lost`` flags and wakes only that queued
cycle, which never starts; the running request's ``receive()`` waits on
(listening for ``http.disconnect``, say) until the app gives up, and its
late response is logged ``200 OK`` to a connection that is gone (0.3.27
even hands it a spurious ``http.request``).

Fixed behaviour, as h11 does it: h11 parses no request behind the running
one, so its ``self.cycle`` is always the running request and a lost
connection reaches it at once.  Here the running request is flagged
``disconnected`` and its event set too, so its ``receive()`` returns
``http.disconnect`` and its ``send()`` does nothing, as for any request
whose client left.

Hook: after ``connection_lost`` (once per connection), and work only when
a request is queued.  uvicorn keeps no reference to the running request
then, and tracking it per request would cost every request a call; so the
running request is found where it is: among the server's request tasks
(``self.tasks``, every release since 0.2.21), the one running
``RequestResponseCycle.run_asgi`` for this transport, read with
``inspect.getcoroutinelocals``.  A scan of the running tasks, once, on the
rare path of a client leaving with requests queued.
"""

import inspect
from typing import Callable, Tuple

from ..implementations import Release
from .base import Fix, protocol_hook


def _tell_running(original: Callable) -> Callable:
    def connection_lost(self, *args, **kwargs):
        queued = bool(self.pipeline)
        try:
            return original(self, *args, **kwargs)
        finally:
            if queued:
                disconnect_running(self)

    return connection_lost


def disconnect_running(protocol: object) -> None:
    """Flag and wake every unfinished request of ``protocol`` still running."""
    cycle_class = type(protocol.cycle)
    transport = protocol.transport
    for task in list(protocol.tasks):
        if task.done():
            continue
        get_coro = getattr(task, "get_coro", None)  # Python 3.8+
        coro = get_coro() if get_coro is not None else getattr(task, "_coro", None)
        try:
            cycle = inspect.getcoroutinelocals(coro).get("self")
        except (AttributeError, TypeError):  # not a plain coroutine: not one of ours
            continue
        if (
            type(cycle) is cycle_class
            and cycle.transport is transport
            and not cycle.response_complete
            and not cycle.disconnected
        ):
            cycle.disconnected = True
            cycle.message_event.set()


_INSPECTS = (
    "HttpToolsProtocol.connection_lost",
    "HttpToolsProtocol.on_headers_complete",
    "HttpToolsProtocol.on_response_complete",
    "RequestResponseCycle.run_asgi",
    "RequestResponseCycle.send",
    "RequestResponseCycle.receive",
)


def _inspects(impl: str, version: Release) -> "Tuple[str, ...]":
    return _INSPECTS


FIX = Fix(
    id="R1",
    summary="httptools: a lost connection is not told to the request running before a queued one",
    upstream="no upstream issue; h11 is not affected",
    broken={"h11": None, "httptools": ("0.2.21", None)},
    hooks=protocol_hook("connection_lost", _tell_running),
    inspects=_inspects,
    not_applicable={"h11": "h11 parses no request behind the running one"},
)
