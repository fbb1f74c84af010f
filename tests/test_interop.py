"""keepalive-guard beside other wrapt instrumentors, on a real server.

Another instrumentor wraps ``on_response_complete`` before the guard
installs and again after it (``interop_server.py``); the guard's E fix must
still hold (both pipelined responses arrive) and both foreign wrappers must
still run once per response (where the release has no E, R3's fix is the
one hooked there).  In process: the chain is introspectable, and
uninstall refuses to drop a foreign wrapper above ours.
"""

import os
import time

import pytest
import wrapt
from conftest import has_bug, protocol_module, uvicorn_version
from harness import Server
from test_api import PRISTINE, differences

import keepalive_guard
from keepalive_guard import KeepaliveGuardError
from keepalive_guard.patcher import is_ours
from keepalive_guard.verify.scenarios import RUNS, SCENARIOS, TIMEOUT

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop_server.py")
#: the fixes with a step in on_response_complete (fixes/completion.py); from 0.2.21
COMPLETION_FIXES = ("C", "D", "E", "R3")
#: the proof per bug: E where the release has it, else R3 (0.27.1+); responses per connection
PROOFS = (("E", 2), ("R3", 1))


def proof(http):
    """(scenario, responses per connection) of a bug of this release on ``http`` whose fix
    hooks on_response_complete, or None."""
    for bug, responses in PROOFS:
        if has_bug(bug, http):
            return next(s for s in SCENARIOS if s.bug == bug), responses
    return None


def hooks_completion(http):
    return any(has_bug(fix, http) for fix in COMPLETION_FIXES)


def test_fix_and_foreign_wrappers_both_hold(http):
    if proof(http) is None:
        pytest.skip(
            "uvicorn {}: no fix hooks {}'s on_response_complete (C, D, E, R3: from 0.2.21)".format(
                uvicorn_version(), http
            )
        )
    scenario, per_connection = proof(http)
    server = Server(http=http, guard="none", timeout_keep_alive=TIMEOUT)
    server.args[1:3] = [SCRIPT]  # the same arguments, through the instrumented script
    responses = RUNS * per_connection
    with server:
        lost = scenario.count(server)
        deadline = time.monotonic() + 5  # a response reaches the client before its wrappers log
        log = server.log()
        while log.count("foreign below") < responses and time.monotonic() < deadline:
            time.sleep(0.05)
            log = server.log()
        state = {(s["fix"], s["implementation"]): s["state"] for s in server.guard["fixes"]}
    assert lost == 0, log
    assert state[scenario.bug, http] == "applied", state
    assert log.count("foreign below") == responses, log
    assert log.count("foreign above") == responses, log


def _calls(tag, calls):
    def wrapper(wrapped, instance, args, kwargs):
        calls.append(tag)
        return wrapped(*args, **kwargs)

    return wrapper


def test_chain_is_introspectable_and_uninstall_keeps_foreign_wrappers():
    cls, name = protocol_module("h11").H11Protocol, "on_response_complete"
    if name not in cls.__dict__:
        pytest.skip(
            "uvicorn {} has no H11Protocol.on_response_complete (from 0.2.7)".format(
                uvicorn_version()
            )
        )
    original = cls.__dict__[name]
    calls = []
    wrapt.wrap_function_wrapper(cls, name, _calls("below", calls))
    below = cls.__dict__[name]
    try:
        report = keepalive_guard.install()
        guarded = hooks_completion("h11")
        mine = cls.__dict__[name]
        if guarded:  # the foreign wrapper did not hide uvicorn's code from the decision
            want = "applied" if has_bug("E", "h11") else "fixed upstream"
            assert report.get("E", "h11").state == want
            assert is_ours(mine) and mine.__wrapped__ is below
            assert below.__wrapped__ is original
        else:
            assert mine is below
        wrapt.wrap_function_wrapper(cls, name, _calls("above", calls))
        above = cls.__dict__[name]
        if guarded:
            with pytest.raises(KeepaliveGuardError) as info:
                keepalive_guard.uninstall()
            assert "H11Protocol.on_response_complete" in str(info.value)
            assert cls.__dict__[name] is above and keepalive_guard.status().installed
        setattr(cls, name, mine)  # the other instrumentor uninstruments first
        keepalive_guard.uninstall()
        assert cls.__dict__[name] is below, "uninstall must restore the foreign wrapper exactly"
    finally:
        if keepalive_guard.status(import_modules=False).installed:
            setattr(cls, name, mine)
            keepalive_guard.uninstall()
        setattr(cls, name, original)
    assert differences(PRISTINE) == []
