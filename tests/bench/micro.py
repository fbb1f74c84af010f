"""Per-call cost of what the guard puts on uvicorn's per-request path.

Runs inside a benchmark environment (run by tests/bench/run.py)::

    <env python> tests/bench/micro.py --http h11|httptools [--rounds 7] [--number 20000]

One protocol instance of uvicorn's own class, connected to a stub transport
(no sockets; asyncio event loop, not running).  Rounds alternate unguarded
(``keepalive_guard.uninstall()``) and guarded (``keepalive_guard.install()``,
which patches the same class in place), so the same instance is timed both
ways.  Timed statements (timeit, ``number`` calls per sample):

``assign_cycle``   ``cycle.on_response = bound; protocol.cycle = cycle``: the
                   assignment uvicorn makes once per request.  The guard puts
                   nothing on ``cycle`` (a plain instance attribute in both
                   arms), so this should cost the same guarded and not: kept
                   as the evidence.  (The ``on_response`` reset is kept so the
                   figures compare with earlier runs; both arms pay it.)
``orc_keepalive``  ``protocol.on_response_complete()`` on an open transport:
                   arms the keep-alive timer (the harness then cancels it, in
                   both arms; the loop is run between samples so asyncio drops
                   the cancelled handles).  No request was made, so on h11
                   both sides are idle: fix E's step checks h11's states and
                   runs the original (after a real response, with both sides
                   done, it runs in the original's place: see ``request``).
``orc_closing``    the same on a closing transport: the original returns after
                   one counter increment, so this isolates the guard's one
                   wrapper (the steps of C, D and E, fixes/completion.py).
``harness``        the timer reset alone, to subtract.
``request``        a whole keep-alive request: ``data_received(b"GET / ...")`` on a
                   fresh instance created in that arm's state, the hello app's
                   task, its two sends, ``on_response_complete``; one after
                   another (ns per request).  The in-process, low-noise
                   counterpart of the server benchmark's CPU per request.
``attr_rw``        three writes and five reads of other protocol attributes
                   (``url``, ``scope``, ``headers``; ``transport``, ``flow``,
                   ``cycle``, ``loop``, ``server_state``): on CPython 3.11+
                   an instance whose ``__dict__`` was materialised (as a
                   descriptor storing through ``instance.__dict__`` would do)
                   loses the inline-values layout, which slows every
                   attribute access.  The guard touches no instance
                   ``__dict__``, so this too should show no difference.

The unguarded arm uses an instance created while the guard was not
installed; the guarded arm one created while it was, as in a real server.
``patched`` in the output records what the guard put on the class:
``on_response_complete`` is "one wrapper (C, D, E)" (the fix ids from the
wrapper's ``__keepalive_guard__`` attribute) or "original".

Also, when ``keepalive_guard.protocols`` can build its class for this
implementation (on first use), the same statements on an instance of that
class (guarded route, no global patch).  Prints one JSON line; times in
nanoseconds per call (median of the samples, and min).
"""

import argparse
import asyncio
import importlib
import inspect
import json
import statistics
import sys
import time
import timeit


class StubTransport(object):
    def __init__(self):
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {
            "sockname": ("127.0.0.1", 8000),
            "peername": ("127.0.0.1", 50000),
        }.get(name, default)

    def is_closing(self):
        return self.closing

    def write(self, data):
        pass

    def writelines(self, data):
        pass

    def close(self):
        self.closing = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_write_buffer_size(self):
        return 0

    def set_protocol(self, protocol):
        pass


class Cycle(object):
    """Stands in for RequestResponseCycle: the fixes touch only these attributes."""

    def __init__(self):
        self.on_response = None
        self.message_event = None
        self.response_complete = False
        self.disconnected = False


REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def hello_app():
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
    }
    body = {"type": "http.response.body", "body": b"Hello, world!"}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send(start)
        await send(body)

    return app


def make_protocol(cls, http, loop, app=None):
    import uvicorn.config

    if app is None:

        async def app(scope, receive, send):
            pass

    config = uvicorn.config.Config(
        app=app, http=http, lifespan="off", log_level="warning", access_log=False
    )
    config.load()
    try:
        from uvicorn.server import ServerState
    except ImportError:
        from uvicorn.main import ServerState
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "server_state" in params:
        kwargs["server_state"] = ServerState()
    if "app_state" in params:
        kwargs["app_state"] = {}
    if "_loop" in params:
        kwargs["_loop"] = loop
    protocol = cls(config=config, **kwargs)
    protocol.connection_made(StubTransport())
    return protocol


STATEMENTS = {
    "assign_cycle": "c.on_response = bound\np.cycle = c",
    "orc_keepalive": "p.on_response_complete()\nt = p.timeout_keep_alive_task\n"
    "if t is not None:\n    t.cancel()\n    p.timeout_keep_alive_task = None",
    "orc_closing": "p.on_response_complete()",
    "harness": "t = p.timeout_keep_alive_task\n"
    "if t is not None:\n    t.cancel()\n    p.timeout_keep_alive_task = None",
    "attr_rw": "p.url = c\np.scope = c\np.headers = c\n"
    "p.transport; p.flow; p.cycle; p.loop; p.server_state",
}


def sample(protocol, loop, name, number):
    cycle = Cycle()
    protocol.transport.closing = name == "orc_closing"
    env = {"p": protocol, "c": cycle, "bound": protocol.on_response_complete}
    timer = timeit.Timer(STATEMENTS[name], globals=env)
    ns = timer.timeit(number) / number * 1e9
    protocol.transport.closing = False
    loop.run_until_complete(asyncio.sleep(0))  # drop cancelled timer handles
    return ns


def request_sample(cls, http, loop, number):
    """ns per request: ``number`` keep-alive GETs through a fresh protocol instance
    (created in the current guard state) on a stub transport, one after another:
    data_received, the hello app's task, the response, on_response_complete."""
    protocol = make_protocol(cls, http, loop, hello_app())
    state = protocol.server_state

    async def drive():
        target = state.total_requests
        for _ in range(number):
            target += 1
            protocol.data_received(REQUEST)
            spins = 0
            while state.total_requests < target:
                await asyncio.sleep(0)
                spins += 1
                if spins > 10000:
                    raise RuntimeError("no response from the protocol")

    t0 = time.perf_counter()
    loop.run_until_complete(drive())
    ns = (time.perf_counter() - t0) / number * 1e9
    timer = getattr(protocol, "timeout_keep_alive_task", None)
    if timer is not None:
        timer.cancel()
    protocol.transport.close()
    protocol.connection_lost(None)
    loop.run_until_complete(asyncio.sleep(0))
    return ns


def describe(cls, name):
    value = cls.__dict__.get(name)
    if value is None:
        for base in cls.__mro__[1:]:
            if name in base.__dict__:
                return "inherited from {}: {}".format(
                    base.__name__, type(base.__dict__[name]).__name__
                )
        return "plain instance attribute"
    return (
        repr(value)
        if not callable(value)
        else "{} ({})".format(
            getattr(value, "__qualname__", type(value).__name__),
            ",".join(getattr(value, "__keepalive_guard__", ()) or ()) or "original",
        )
    )


def describe_wrapper(cls, name):
    """What the guard put on ``cls.name``: "one wrapper (C, D, E)" or "original"."""
    fixes = getattr(getattr(cls, name, None), "__keepalive_guard__", None)
    return "one wrapper ({})".format(", ".join(fixes)) if fixes else "original"


class Arm(object):
    """One way of running uvicorn's protocol: enter() / leave() switch the process to it."""

    def __init__(self, name, cls, enter=None, leave=None):
        self.name, self.cls = name, cls
        self._enter, self._leave = enter, leave

    def enter(self):
        if self._enter:
            self._enter()

    def leave(self):
        if self._leave:
            self._leave()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", choices=("h11", "httptools"), required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="requests per sample of the whole-request measure",
    )
    args = parser.parse_args(argv)

    import uvicorn

    import keepalive_guard

    module = importlib.import_module(
        "uvicorn.protocols.http." + ("h11_impl" if args.http == "h11" else "httptools_impl")
    )
    cls = getattr(module, "H11Protocol" if args.http == "h11" else "HttpToolsProtocol")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    keepalive_guard.install()
    report = keepalive_guard.status(import_modules=False)
    applied = sorted(s.fix for s in report.applied if s.implementation == args.http)
    patched = {
        "cycle": describe(cls, "cycle"),
        "on_response_complete": describe_wrapper(cls, "on_response_complete"),
    }
    for name in ("handle_upgrade", "handle_websocket_upgrade"):  # E2 (h11)
        if hasattr(cls, name):
            patched[name] = describe_wrapper(cls, name)
    keepalive_guard.uninstall()

    arms = [
        Arm("none", cls),
        Arm("global", cls, keepalive_guard.install, keepalive_guard.uninstall),
    ]
    route_error = None
    try:
        protocols = importlib.import_module("keepalive_guard.protocols")
        # built here, on first use (the module's __getattr__)
        route_cls = getattr(protocols, "H11Protocol" if args.http == "h11" else "HttpToolsProtocol")
        arms.append(Arm("route", route_cls))
    except Exception as exc:  # module being written elsewhere: report, do not fail
        route_error = "{}: {}".format(type(exc).__name__, exc)

    # One instance per arm for the timeit statements, created in that arm's state.
    instances = {}
    for arm in arms:
        arm.enter()
        instances[arm.name] = make_protocol(arm.cls, args.http, loop)
        arm.leave()

    names = ("assign_cycle", "orc_keepalive", "orc_closing", "harness", "attr_rw")
    samples = {arm.name: {n: [] for n in names + ("request",)} for arm in arms}
    for name in names:  # warm-up
        sample(instances["none"], loop, name, max(1000, args.number // 10))
    request_sample(cls, args.http, loop, max(100, args.requests // 10))
    for round_no in range(args.rounds):
        order = arms if round_no % 2 == 0 else list(reversed(arms))
        for arm in order:
            arm.enter()
            try:
                for name in names:
                    samples[arm.name][name].append(
                        sample(instances[arm.name], loop, name, args.number)
                    )
                samples[arm.name]["request"].append(
                    request_sample(arm.cls, args.http, loop, args.requests)
                )
            finally:
                arm.leave()

    result = {
        "uvicorn": uvicorn.__version__,
        "python": sys.version.split()[0],
        "http": args.http,
        "applied": applied,
        "patched": patched,
        "route_error": route_error,
        "rounds": args.rounds,
        "number": args.number,
        "requests": args.requests,
        "ns": {
            arm: {
                name: {"median": statistics.median(v), "min": min(v), "samples": v}
                for name, v in per.items()
            }
            for arm, per in samples.items()
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
