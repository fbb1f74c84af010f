"""D: a second keep-alive timer armed without cancelling the first.

Backports encode/uvicorn issue #824, PR #832 (first released in 0.12.3).
Broken in 0.2.21-0.12.2, h11 and httptools.

``on_response_complete`` assigns a new ``call_later`` handle without
cancelling a pending one; two completions with no read in between
(pipelining) leak the first timer, which later closes a busy connection.
The fix, as upstream: cancel any pending timer before arming a new one.

Step (``completion.py``): before the original ``on_response_complete``.
"""

from .base import Fix, completion_hooks, protocol_methods
from .timers import NO_TIMER

FIX = Fix(
    id="D",
    summary="a second keep-alive timer armed without cancelling the first",
    upstream="encode/uvicorn#824, PR #832",
    broken={"h11": ("0.2.21", "0.12.3"), "httptools": ("0.2.21", "0.12.3")},
    hooks=completion_hooks,
    inspects=protocol_methods(("on_response_complete",)),
    absent=NO_TIMER,
)
