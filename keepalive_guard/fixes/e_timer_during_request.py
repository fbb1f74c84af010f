"""E: keep-alive timer left armed while the next request is processed.

Backports encode/uvicorn issue #1637, PR #2243 (first released in 0.27.1).
Broken in 0.2.21-0.27.0.post1, h11 and httptools.

``on_response_complete`` arms the timer, then starts a request that was
already buffered (pipelined, or sent right after the previous response);
nothing disarms it, so a request slower than ``timeout_keep_alive`` is cut
off: on h11 with ``LocalProtocolError`` from ``timeout_keep_alive_handler``
and a lost response, on httptools by closing the connection mid-request.

Steps (``completion.py``) in ``on_response_complete``, the only place a
buffered request starts with the timer armed (``data_received`` cancels it
before any new bytes are parsed, on every release).  As upstream: no timer
while the next request is processed.  Upstream's h11 fix arms the timer and
cancels it once a request starts, and arming and cancelling a timer per
pipelined response cost more than the rest of the guard's work on that path;
so the step does the original's work itself (h11: where a buffered request
can start) and arms the timer only if no request started:

* h11, both sides of the exchange ``DONE`` (transport open): count the
  request, cancel a timer still pending, resume reading, start h11's next
  cycle and ``handle_events()``; then arm the timer as the original does if
  the client side is idle (or closed) again, i.e. no request or upgrade
  started and nothing closed the connection.
* httptools, transport open: count the request, cancel a timer still
  pending, resume reading; then pop a queued request and start its task,
  kept in ``self.tasks``, or, with none queued, arm the timer as the
  original does.  (Doing the original's work in both cases spares every
  response a call layer.)

Otherwise the original runs.  That work is the same in every release of the
range (two fingerprints of the method per implementation, 0.11.0-0.12.2 and
0.12.3-0.27.0, checked below, with the methods it calls).
"""

from .base import Fix, completion_hooks, methods_by_impl
from .timers import NO_TIMER

_INSPECTS = {
    "h11": (
        "H11Protocol.on_response_complete",
        "H11Protocol.handle_events",
        "H11Protocol.data_received",
    ),
    "httptools": (
        "HttpToolsProtocol.on_response_complete",
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol.data_received",
    ),
}


FIX = Fix(
    id="E",
    summary="keep-alive timer left armed while the next request is processed",
    upstream="encode/uvicorn#1637, PR #2243",
    broken={"h11": ("0.2.21", "0.27.1"), "httptools": ("0.2.21", "0.27.1")},
    hooks=completion_hooks,
    inspects=methods_by_impl(_INSPECTS),
    absent=NO_TIMER,
)
