"""The catalogue: every fix keepalive-guard applies, in application order.

One module per fix, each naming the upstream issue and PR it backports (or,
for R1-R5, which no upstream release fixes, the one it relates to) and the
releases it covers.  Order matters only where two fixes wrap the same
method: earlier fixes wrap the original first.  ``DEFAULT_FIX_IDS``: what
``all`` (and no selection) means; R4 only when named.
"""

from collections import OrderedDict

from . import (
    a_early_disconnect,
    b_receive_after_response,
    c_shared_message_event,
    d_stacked_timer,
    e2_timer_across_upgrade,
    e_timer_during_request,
    r1_disconnect_behind_queue,
    r2_upgrade_behind_request,
    r3_body_after_response,
    r4_no_first_request,
    r5_timer_after_reset,
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
        r1_disconnect_behind_queue.FIX,
        r2_upgrade_behind_request.FIX,
        r3_body_after_response.FIX,
        r4_no_first_request.FIX,
        r5_timer_after_reset.FIX,
    )
)

FIX_IDS = tuple(CATALOGUE)
DEFAULT_FIX_IDS = tuple(fix.id for fix in CATALOGUE.values() if fix.default)

__all__ = ["CATALOGUE", "DEFAULT_FIX_IDS", "FIX_IDS", "Fix"]
