"""The catalogue: every fix keepalive-guard backports, in application order.

One module per fix, each naming the upstream issue and PR it backports and
the releases it covers.  Order matters only where two fixes wrap the same
method: earlier fixes wrap the original first.
"""

from collections import OrderedDict

from . import (
    a_early_disconnect,
    b_receive_after_response,
    c_shared_message_event,
    d_stacked_timer,
    e2_timer_across_upgrade,
    e_timer_during_request,
)
from .base import Fix

CATALOGUE = OrderedDict(
    (fix.id, fix)
    for fix in (
        a_early_disconnect.FIX,
        b_receive_after_response.FIX,
        c_shared_message_event.FIX,
        d_stacked_timer.FIX,
        e_timer_during_request.FIX,
        e2_timer_across_upgrade.FIX,
    )
)

FIX_IDS = tuple(CATALOGUE)

__all__ = ["CATALOGUE", "FIX_IDS", "Fix"]
