"""R3: an answered request's late body leaves the connection with no timer.

No upstream fix or issue.  Broken in every release from 0.2.21 (the first
with the keep-alive timer) to the newest studied, h11 and httptools.

When the app responds before the request body has fully arrived,
``on_response_complete`` arms the keep-alive timer; the rest of the body
then arrives, ``data_received`` cancels the timer (any bytes might begin a
new request) and, no request having started, nothing arms it again: the
idle connection stays open for ever (and keeps serving later requests).
Any client can pin server connections, and file descriptors, this way.

Fixed behaviour: the rest of a request that has been answered is not
activity that keeps the connection alive; a new request is.  So the
connection is closed ``timeout_keep_alive`` after the response completed,
as for any answered request, unless by then a new request has begun (then
its own response arms the timer again, as upstream).  Upstream's timer is
left as it is; a second one-shot check is armed beside it, only when a
response completes with its request's body still arriving (the current
cycle is the one answered, and h11's client side is still in
``SEND_BODY``, or httptools' ``more_body`` is still true).  When it fires it closes the
connection through ``timeout_keep_alive_handler``, exactly as the timer
would, if the connection is open, the timer is no longer armed (the body's
bytes cancelled it), and no request has begun since: h11's client side is
still sending that body or idle with nothing buffered; httptools' current
scope is still that request's (``on_message_begin``, or ``on_url`` in
older releases, makes a new one for every request).

It holds the protocol and the cycle only weakly, so a lost connection is
not kept alive by it (see R5).  Step (``completion.py``): after the
original ``on_response_complete``; three attribute reads on every response.
"""

import weakref

from .base import Fix, completion_hooks, methods_by_impl


def watch(protocol: object, impl: str) -> None:
    """Arm the one-shot check for the response that just completed."""
    if protocol.transport.is_closing():
        return
    protocol.loop.call_later(
        protocol.timeout_keep_alive,
        _expire,
        weakref.ref(protocol),
        weakref.ref(protocol.cycle),
        _h11_idle if impl == "h11" else _httptools_idle,
    )


def _expire(protocol_ref, cycle_ref, idle) -> None:
    protocol, cycle = protocol_ref(), cycle_ref()
    if protocol is None or cycle is None or protocol.cycle is not cycle:
        return  # gone, or a new request started
    if protocol.timeout_keep_alive_task is not None or protocol.transport.is_closing():
        return  # the timer is still armed and closes the connection itself
    if idle(protocol, cycle):
        protocol.timeout_keep_alive_handler()


def _h11_idle(protocol: object, cycle: object) -> bool:
    import h11

    conn = protocol.conn
    state = conn.their_state
    if state is h11.SEND_BODY:
        return True
    return state is h11.IDLE and conn.our_state is h11.IDLE and not conn.trailing_data[0]


def _httptools_idle(protocol: object, cycle: object) -> bool:
    return protocol.scope is cycle.scope and not protocol.pipeline


_INSPECTS = {
    "h11": (
        "H11Protocol.on_response_complete",
        "H11Protocol.handle_events",
        "H11Protocol.data_received",
        "H11Protocol.timeout_keep_alive_handler",
    ),
    "httptools": (
        "HttpToolsProtocol.on_response_complete",
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol.on_body",
        "HttpToolsProtocol.on_message_complete",
        "HttpToolsProtocol.data_received",
        "HttpToolsProtocol.timeout_keep_alive_handler",
    ),
}


FIX = Fix(
    id="R3",
    summary="no keep-alive timer after an answered request's body arrives",
    upstream="no upstream issue",
    broken={"h11": ("0.2.21", None), "httptools": ("0.2.21", None)},
    hooks=completion_hooks,
    inspects=methods_by_impl(_INSPECTS),
)
