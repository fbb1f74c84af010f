"""One real uvicorn server: ``python -m keepalive_guard.verify.serve --http h11 ...``.

Binds 127.0.0.1 on a free port, prints ``READY <port> <guard status json>``
on stdout once the server accepts connections; logs go to stderr.
Runs on every Python and uvicorn release the suite covers (3.6+, 0.2.2+),
each started the way that release can be:

* ``Server.run(sockets=...)`` (0.5.0+): uvicorn's ``Config`` and ``Server`` on
  a socket bound here;
* ``Config`` without ``run(sockets=...)`` (0.3.26-0.4.x): uvicorn's ``Config``
  and ``Server`` on a free port, READY once it accepts connections;
* no ``Config`` (0.2.x-0.3.25): the protocol class served by an asyncio
  server made here, its constructor given the arguments it declares
  (0.2.0-0.2.20 take no ``timeout_keep_alive``: those releases have no
  keep-alive timer, connections stay open until the client leaves).

Releases before 0.6.0 call ASGI 2 applications and have no adapter: they are
given ``app.ASGI2App``.
"""

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import signal
import socket
import sys
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", default="h11", help="a uvicorn name or module:Class")
    parser.add_argument("--ws", default="none")
    parser.add_argument("--guard", default="none", help="'none', 'env', or a fix selection")
    parser.add_argument("--timeout-keep-alive", type=float, default=1.0)
    parser.add_argument("--loop", default="asyncio", help="asyncio or uvloop")
    args = parser.parse_args()

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.guard not in ("none", "env"):
        import keepalive_guard

        keepalive_guard.install(fixes=args.guard)

    # Server lives in uvicorn.main on every release (``uvicorn.main`` the
    # attribute is the click command).
    server_class = getattr(importlib.import_module("uvicorn.main"), "Server", None)

    http = args.http
    if ":" in http:  # an import string: pass the class, which every release accepts
        module_name, _, name = http.partition(":")
        http = getattr(importlib.import_module(module_name), name)
    config_module = _optional_module("uvicorn.config")
    if config_module is None:
        _serve_without_config(args, http)
    elif "sockets" in inspect.signature(server_class.run).parameters:
        _serve_on_socket(args, http, config_module.Config, server_class)
    else:
        _serve_on_port(args, http, config_module.Config, server_class)


def _optional_module(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _application():
    """ASGI 3 where uvicorn calls or adapts it (0.6.0+: ``Config`` knows interfaces)."""
    from keepalive_guard.verify.app import ASGI2App, app

    config_module = _optional_module("uvicorn.config")
    return app if hasattr(config_module, "INTERFACES") else ASGI2App


def _bound_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _announce(port, protocol_class):
    guard = sys.modules["keepalive_guard"].status(import_modules=False).as_dict()
    class_status = getattr(protocol_class, "keepalive_guard_status", None)
    if class_status is not None:  # a guarded protocol class serves: report its decisions
        guard["fixes"] = [status.as_dict() for status in class_status]
    print("READY {} {}".format(port, json.dumps(guard)), flush=True)


def _config(args, http, config_class, **extra):
    """uvicorn's Config with the options this release declares."""
    wanted = dict(
        app=_application(),
        http=http,
        ws=args.ws,
        loop=args.loop,
        lifespan="off",
        disable_lifespan=True,
        timeout_keep_alive=args.timeout_keep_alive,
        log_level="info",
        access_log=False,
        **extra,
    )
    declared = inspect.signature(config_class.__init__).parameters
    config = config_class(**{k: v for k, v in wanted.items() if k in declared})
    if hasattr(config, "load"):
        config.load()
    return config


def _serve_on_socket(args, http, config_class, server_class):
    config = _config(args, http, config_class)
    sock = _bound_socket()
    sock.listen(2048)  # accept (into the backlog) from the moment READY is printed
    _announce(sock.getsockname()[1], config.http_protocol_class)
    server_class(config).run(sockets=[sock])


def _serve_on_port(args, http, config_class, server_class):
    """0.3.26-0.4.x: the server binds host and port itself."""
    probe = _bound_socket()
    port = probe.getsockname()[1]
    probe.close()
    config = _config(args, http, config_class, host="127.0.0.1", port=port)
    declared = inspect.signature(server_class.__init__).parameters
    if "global_state" in declared:  # 0.3.26-0.3.31
        from uvicorn.global_state import GlobalState

        server = server_class(config=config, global_state=GlobalState())
    else:
        server = server_class(config=config)
    protocol_class = config.http_protocol_class
    threading.Thread(
        target=_announce_when_listening, args=(port, protocol_class), daemon=True
    ).start()
    server.run()


def _announce_when_listening(port, protocol_class, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        _announce(port, protocol_class)
        return


def _protocol_class(http, name):
    """``http`` as a class: a class, or a name of uvicorn's implementations."""
    if not isinstance(http, str):
        return http
    if http == "auto":
        http = "httptools" if _optional_module("httptools") is not None else "h11"
    for module_name in ("uvicorn.protocols.http.{}_impl", "uvicorn.protocols.http.{}"):
        module = _optional_module(module_name.format(http))
        if module is not None:
            return getattr(module, name[http])
    raise SystemExit("unknown --http {!r}".format(http))


_WS = {
    "wsproto": ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol"),
    "websockets": ("uvicorn.protocols.websockets.websockets_impl", "WebSocketProtocol"),
}


def _serve_without_config(args, http):
    """0.2.x-0.3.25: serve the protocol class on an asyncio server made here."""
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    cls = _protocol_class(http, {"h11": "H11Protocol", "httptools": "HttpToolsProtocol"})
    ws_class = None
    if args.ws in _WS:
        module_name, class_name = _WS[args.ws]
        ws_class = getattr(_optional_module(module_name), class_name, None)
    offered = dict(
        app=_application(),
        loop=loop,
        connections=set(),
        tasks=set(),
        state={"total_requests": 0},
        logger=logging.getLogger("uvicorn"),
        access_log=False,
        ws_protocol_class=ws_class,
        proxy_headers=False,
        root_path="",
        limit_concurrency=None,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_response=60,
    )
    declared = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in offered.items() if k in declared}

    sock = _bound_socket()
    server = loop.run_until_complete(loop.create_server(lambda: cls(**kwargs), sock=sock))

    def stop():
        server.close()
        loop.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tick = getattr(cls, "tick", None)  # refreshes the Date header, as uvicorn's server does

    def ticking():
        if tick is not None:
            tick()
        loop.call_later(1.0, ticking)

    ticking()
    _announce(sock.getsockname()[1], cls)
    loop.run_forever()


if __name__ == "__main__":
    main()
