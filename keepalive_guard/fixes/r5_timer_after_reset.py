"""R5: the keep-alive timer outlives a reset connection.

No upstream fix.  Related: the cancel upstream added to ``connection_lost``
in 0.18.3, which runs only when ``exc is None`` (a clean close).  Broken in
every release from 0.2.21 (the first with the timer) to the newest studied,
h11 and httptools; before 0.18.3 after a clean close too.

The armed ``TimerHandle`` holds ``timeout_keep_alive_handler``, a bound
method, so after an abnormal close (RST, ``ECONNRESET``, a read error) the
protocol, its last cycle and that request's scope stay alive for
``timeout_keep_alive`` seconds after uvicorn has forgotten the connection.
A client (or a proxy purging idle connections with RST) can keep that
much memory pinned per connection, for as long as the timeout is.

Fixed behaviour: once the connection is lost, however it was lost, the
timer is cancelled, as upstream already does after a clean close.  The
timer's only job is to close an idle connection; a lost connection has
nothing left to close, and cancelling drops the handle's reference to the
protocol at once (asyncio and uvloop clear a cancelled handle's callback).
Nothing else changes: the handler would only have found the transport
closing and returned.

Hook: after ``connection_lost`` (once per connection), even if it raises.
"""

from typing import Callable

from .base import Fix, protocol_hook, protocol_methods
from .timers import cancel_keepalive


def _cancel_after(original: Callable) -> Callable:
    def connection_lost(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        finally:
            cancel_keepalive(self)

    return connection_lost


FIX = Fix(
    id="R5",
    summary="the keep-alive timer keeps a reset connection's protocol alive",
    upstream="no upstream issue; 0.18.3 cancels only when exc is None",
    broken={"h11": ("0.3.3", None), "httptools": ("0.3.3", None)},
    hooks=protocol_hook("connection_lost", _cancel_after),
    inspects=protocol_methods(
        ("connection_lost", "on_response_complete", "timeout_keep_alive_handler")
    ),
    absent="covered from 0.3.3: 0.2.21-0.3.2 also hold every request's protocol in a "
    "response-timeout timer (timeout_response) for a minute, which this fix does not cancel",
)
