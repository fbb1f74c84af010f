"""The keep-alive timer helpers the timer fixes share."""

#: Why a timer bug cannot exist before 0.2.21.
NO_TIMER = "0.2.0-0.2.20 have no keep-alive timer (timeout_keep_alive came in 0.2.21)"


def cancel_keepalive(protocol: object) -> None:
    """Cancel the protocol's pending keep-alive timer, if any.

    The same thing upstream's ``_unset_keepalive_if_required`` does from
    0.12.3 on; written against the attributes every release since 0.2.21 has.
    """
    timer = protocol.timeout_keep_alive_task
    if timer is not None:
        timer.cancel()
        protocol.timeout_keep_alive_task = None


def arm_keepalive(protocol: object) -> None:
    """Arm the keep-alive timer as ``on_response_complete`` does on every release."""
    protocol.timeout_keep_alive_task = protocol.loop.call_later(
        protocol.timeout_keep_alive, protocol.timeout_keep_alive_handler
    )
