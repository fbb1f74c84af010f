"""R2: httptools answers a pipelined WebSocket upgrade before the request ahead of it.

No upstream fix or issue; h11's side of the same race is E2 (PR #3107).
Broken in every httptools release from 0.2.21 to the newest studied (the
fix hooks the upgrade method, ``handle_upgrade`` 0.3.0-0.18.3 and
``handle_websocket_upgrade`` since: 0.2.21-0.2.22 upgrade through a module
function and are reported unrecognised); h11 is not affected.

httptools parses a plain request and an upgrade sent behind it in one read,
and ``data_received`` hands the connection to the WebSocket protocol at
once: the ``101`` goes out first, the plain response is later written into
the WebSocket stream, and its ``on_response_complete`` arms the HTTP
keep-alive timer, which closes the WebSocket (EOF, no close frame)
``timeout_keep_alive`` after the plain response.

Fixed behaviour, as h11 does it: h11 parses nothing behind the running
request, so the upgrade is taken up only when the earlier response is
complete (from ``on_response_complete``), with the timer cancelled first
(E2's fix, 0.53.0).  Here, while an earlier request is unanswered, the
upgrade waits: reading pauses (nothing can be parsed past an upgrade), and
the call runs, unchanged, right after that request's ``on_response``,
i.e. once its response is complete and ``on_response_complete`` has run;
the timer that armed is cancelled before it.  If that response closed the
connection, there is nothing left to upgrade.  An unsupported upgrade's
400 is answered in order the same way.  With no earlier request
unanswered, the upgrade method runs at once, as before.  Bytes the client
sends after the upgrade request and before the ``101`` are dropped, as
httptools' upstream path drops them (a WebSocket client waits for the
``101`` before sending frames, RFC 6455 section 4.1).

Hook: the upgrade method (once per upgrade); nothing on the request path.
The deferred call is kept in the earlier cycle's ``on_response``, which
uvicorn calls once, when that response completes.
"""

import functools
from typing import Callable, Tuple

from ..implementations import Release
from .base import PROTOCOL, Fix, MethodHook
from .e2_timer_across_upgrade import upgrade_method
from .timers import cancel_keepalive


def _in_order(original: Callable) -> Callable:
    def upgrade(self, *args, **kwargs):
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return original(self, *args, **kwargs)
        self.flow.pause_reading()
        on_response = cycle.on_response
        if getattr(on_response, "func", None) is not _upgrade_after:  # not deferred yet
            cycle.on_response = functools.partial(
                _upgrade_after, self, on_response, original, args, kwargs
            )
        return None

    return upgrade


def _upgrade_after(protocol, on_response, upgrade, args, kwargs) -> None:
    """The earlier response is complete: finish it, then upgrade."""
    on_response()
    if protocol.transport.is_closing():
        return
    cancel_keepalive(protocol)
    upgrade(protocol, *args, **kwargs)


def _hooks(impl: str, version: Release) -> Tuple:
    return (MethodHook(PROTOCOL, upgrade_method(version), _in_order),)


def _inspects(impl: str, version: Release) -> "Tuple[str, ...]":
    return (
        "HttpToolsProtocol.data_received",
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol.on_response_complete",
        "HttpToolsProtocol." + upgrade_method(version),
        "RequestResponseCycle.send",
    )


FIX = Fix(
    id="R2",
    summary="httptools: a pipelined WebSocket upgrade answered before the request ahead of it",
    upstream="no upstream issue; h11's timer side: PR #3107",
    broken={"h11": None, "httptools": ("0.3.0", None)},
    hooks=_hooks,
    inspects=_inspects,
    not_applicable={"h11": "h11 answers a pipelined upgrade in order"},
    absent="covered from 0.3.0: before it the upgrade is a module function serving the "
    "WebSocket inside the HTTP protocol, which this fix does not hook",
)
