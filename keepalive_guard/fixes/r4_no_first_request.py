"""R4: a connection that never sends a request is never closed.

No upstream fix: encode/uvicorn PR #1192 (relates to #160) proposed it and
was closed unmerged.  Broken in every release from 0.2.21 (the first with
the keep-alive timer) to the newest studied, h11 and httptools.  Opt-in:
not in ``all``; select it by name (``KEEPALIVE_GUARD_FIXES=all,R4``).

uvicorn arms the keep-alive timer only when a response completes, so a
client that connects and sends nothing (``telnet``, a half-open
pre-connection from a browser or a load balancer, an attacker) holds a
connection and its file descriptor for as long as it likes.

Fixed behaviour: the connection is idle from the moment it is made, so the
timer is armed in ``connection_made`` exactly as after a response: the
first bytes received cancel it (``data_received`` does on every release),
and if none come within ``timeout_keep_alive`` the handler closes the
connection as it closes any idle keep-alive connection.  It is opt-in
because it changes what a deployment may rely on: a connection opened
ahead of need (browsers and some proxies pre-connect) is now closed after
``timeout_keep_alive`` seconds unused, and every connection carries a timer
from the start.

Hook: after ``connection_made`` (once per connection), only if the
transport is open and no timer is armed.
"""

from typing import Callable

from .base import Fix, protocol_hook, protocol_methods
from .timers import arm_keepalive


def _arm_after(original: Callable) -> Callable:
    def connection_made(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            arm_keepalive(self)
        return result

    return connection_made


FIX = Fix(
    id="R4",
    summary="a connection that never sends a request is never closed (opt-in)",
    upstream="encode/uvicorn PR #1192, closed unmerged",
    broken={"h11": ("0.2.21", None), "httptools": ("0.2.21", None)},
    hooks=protocol_hook("connection_made", _arm_after),
    inspects=protocol_methods(("connection_made", "data_received", "timeout_keep_alive_handler")),
    default=False,
)
