"""Benchmark server: one uvicorn process, run by tests/bench/run.py.

Runs inside a benchmark environment (one uvicorn release), never imported by
pytest.  Usage (run.py builds this command line)::

    <env python> tests/bench/bench_server.py --port 8123 --http h11 \
        --loop asyncio --app hello --mode none|global|route|nofix|passthrough \
        [--timeout-keep-alive 5]

Modes:

``none``    unguarded uvicorn.
``global``  ``keepalive_guard.install()`` before uvicorn is imported (the
            global patch: uvicorn's own protocol classes are patched when
            their modules load).
``route``   ``uvicorn.Config(http=<class>)`` with
            ``keepalive_guard.protocols.H11Protocol`` / ``HttpToolsProtocol``
            and no global patch (the class is built, and its uvicorn module
            imported, on first use).  Exits with status 3 and "not
            available" on stderr if that module or class cannot be had.
``nofix``   as ``global``, with no fix selected: the package loaded and
            installed, nothing patched.
``passthrough``  no guard; uvicorn's ``on_response_complete`` replaced by a
            plain function that calls it (a call layer alone).

Apps: ``hello`` is a bare ASGI callable answering 13 bytes of text/plain;
``fastapi`` is a FastAPI app whose ``GET /`` returns a small JSON object.
Both also answer (outside the hot path):

``/_info``     versions, event loop class, the guard's status (JSON);
``/_objects``  live objects by class (``gc.collect()`` first unless
               ``?nogc``), counted with ``gc.get_objects()`` and filtered by
               class name (ending in): H11Protocol, HttpToolsProtocol,
               RequestResponseCycle, FlowControl, TimerHandle, Event; and
               ``_closed_protocols``: protocols no longer in the server's
               connection set (connection_lost ran) yet still alive;
``/_slow``     answers after 50 ms (for resets in the middle of a request).

Access log off, log level warning: the guard's cost is then a larger share of
the per-request work than with uvicorn's default access log on.
"""

import argparse
import asyncio
import gc
import json
import os
import random
import sys

COUNTED = (
    "H11Protocol",
    "HttpToolsProtocol",
    "RequestResponseCycle",
    "FlowControl",
    "TimerHandle",
    "Event",
)


def count_objects(collect):
    if collect:
        gc.collect()
    counts = {"_closed_protocols": 0}
    for obj in gc.get_objects():
        cls = type(obj)
        if cls.__name__.endswith(COUNTED):
            key = "{}.{}".format(cls.__module__, cls.__qualname__)
            counts[key] = counts.get(key, 0) + 1
            if cls.__name__.endswith("Protocol") and obj not in getattr(obj, "connections", ()):
                counts["_closed_protocols"] += 1  # connection_lost ran, object still alive
    return counts


def _dist_version(name):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return metadata.version(name)
    except Exception:
        return None


INFO = {}


def info():
    import uvicorn

    try:
        loop = asyncio.get_running_loop()
    except AttributeError:  # pragma: no cover
        loop = asyncio.get_event_loop()
    data = dict(INFO)
    data.update(
        {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "uvicorn": uvicorn.__version__,
            "h11": _dist_version("h11"),
            "httptools": _dist_version("httptools"),
            "uvloop": _dist_version("uvloop"),
            "fastapi": _dist_version("fastapi"),
            "starlette": _dist_version("starlette"),
            "keepalive_guard": _dist_version("keepalive-guard"),
            "event_loop": "{}.{}".format(type(loop).__module__, type(loop).__name__),
        }
    )
    guard = sys.modules.get("keepalive_guard")
    if guard is not None:
        report = guard.status(import_modules=False)
        data["guard_installed"] = report.installed
        data["guard_applied"] = sorted(
            "{}:{}".format(s.implementation, s.fix) for s in report.applied
        )
        data["guard_states"] = sorted(
            "{}:{}={}".format(s.implementation, s.fix, s.state) for s in report.fixes
        )
    return data


def hello_app():
    body = b"Hello, world!"
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    message = {"type": "http.response.body", "body": body}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/":
            await send(start)
            await send(message)
            return
        await admin(scope, send)

    async def admin(scope, send):
        path = scope["path"]
        if path == "/_slow":
            await asyncio.sleep(0.05)
            payload = b"slow"
        elif path == "/_objects":
            payload = json.dumps(count_objects(b"nogc" not in scope["query_string"])).encode()
        elif path == "/_info":
            payload = json.dumps(info()).encode()
        else:
            payload = b"not found"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if payload != b"not found" else 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def fastapi_app():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/")
    async def root():
        return {"message": "Hello, world!"}

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str = ""):
        return {"item_id": item_id, "q": q}

    @app.get("/_slow")
    async def slow():
        await asyncio.sleep(0.05)
        return {"slow": True}

    @app.get("/_objects")
    async def objects(nogc: str = ""):
        return JSONResponse(count_objects(not nogc))

    @app.get("/_info")
    async def _info():
        return JSONResponse(info())

    return app


# pymalloc hands out small objects from pools of one size class each (16 KiB
# from CPython 3.10, 4 KiB before; size classes 16 bytes apart from 3.8).
POOL_BYTES = 16384
SIZE_CLASSES = range(16, 513, 16)


def pad_heap(seed):
    """Keep a ``seed``-chosen number (up to a pool's worth) of objects of every
    small size class alive, and return them.

    Where a size class's last pool happens to fill up decides whether the
    same per-request allocations take a fresh pool (and give it back) on every
    request: a process's heap state, not its code, which makes instruction
    counts of the same code differ from process to process.  Padding each
    class by a different amount per seed samples heap states the way hash
    seeds sample hash orders; every arm of a case gets the same padding per
    seed.  Only objects the cyclic GC does not track (bytes, floats, bare
    objects), so collections cost the same."""
    rng = random.Random(seed)
    overhead = sys.getsizeof(b"")
    keep = []
    for size in SIZE_CLASSES:
        count = rng.randrange(POOL_BYTES // size)
        if size <= 16:
            keep.extend(object() for _ in range(count))
        elif size <= 32:
            keep.extend(float(i) + 0.5 for i in range(count))
        else:
            keep.extend(bytes(size - overhead) for _ in range(count))
    return keep


def pass_through(http):
    """uvicorn's ``on_response_complete`` behind a bare call layer: what a
    wrapper alone costs, with no guard loaded."""
    import importlib

    module = importlib.import_module("uvicorn.protocols.http.{}_impl".format(http))
    cls = getattr(module, "H11Protocol" if http == "h11" else "HttpToolsProtocol")
    original = cls.__dict__["on_response_complete"]

    def on_response_complete(self):
        return original(self)

    cls.on_response_complete = on_response_complete


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", choices=("h11", "httptools"), required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--app", choices=("hello", "fastapi"), default="hello")
    parser.add_argument(
        "--mode", choices=("none", "global", "route", "nofix", "passthrough"), default="none"
    )
    parser.add_argument("--timeout-keep-alive", type=float, default=5)
    parser.add_argument("--heap-pad", type=int, default=None, metavar="SEED")
    args = parser.parse_args(argv)

    INFO["mode"] = args.mode
    http = args.http
    if args.mode in ("global", "nofix"):
        import keepalive_guard

        keepalive_guard.install(fixes=None if args.mode == "global" else [])
    elif args.mode == "route":
        try:
            from keepalive_guard import protocols
        except Exception as exc:
            sys.stderr.write("not available: keepalive_guard.protocols: {!r}\n".format(exc))
            return 3
        name = "H11Protocol" if args.http == "h11" else "HttpToolsProtocol"
        try:  # built here, on first use (module __getattr__)
            http = getattr(protocols, name)
        except Exception as exc:
            sys.stderr.write(
                "not available: keepalive_guard.protocols.{}: {!r}\n".format(name, exc)
            )
            return 3
        if issubclass(http, getattr(protocols, "_Unavailable", ())):
            # a placeholder: its implementation cannot be imported here
            sys.stderr.write(
                "not available: keepalive_guard.protocols.{}: {}\n".format(name, http.reason)
            )
            return 3
        INFO["route_class"] = "{}.{}".format(http.__module__, http.__qualname__)
        INFO["route_mro"] = ["{}.{}".format(c.__module__, c.__qualname__) for c in http.__mro__]
        INFO["route_status"] = [
            "{}={}".format(s.fix, s.state) for s in getattr(http, "keepalive_guard_status", ())
        ]

    import uvicorn

    if args.mode == "passthrough":
        pass_through(args.http)
    app = hello_app() if args.app == "hello" else fastapi_app()
    timeout = args.timeout_keep_alive
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        http=http,
        loop=args.loop,
        lifespan="off" if args.app == "hello" else "auto",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=int(timeout) if timeout == int(timeout) else timeout,
    )
    padding = None if args.heap_pad is None else pad_heap(args.heap_pad)  # noqa: F841 (kept alive)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
