"""One real uvicorn server: ``python -m keepalive_guard.verify.serve --http h11 ...``.

Binds 127.0.0.1 on a free port, prints ``READY <port> <guard status json>``
on stdout once uvicorn's config is loaded; logs go to stderr.
Runs on every Python and uvicorn release the suite covers (3.6+, 0.11.0+).
"""

import argparse
import importlib
import json
import logging
import socket
import sys


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

    import uvicorn

    from keepalive_guard.verify.app import app

    http = args.http
    if ":" in http:  # an import string: pass the class, which every release accepts
        module_name, _, name = http.partition(":")
        http = getattr(importlib.import_module(module_name), name)
    config = uvicorn.Config(
        app,
        http=http,
        ws=args.ws,
        loop=args.loop,
        lifespan="off",
        timeout_keep_alive=args.timeout_keep_alive,
        log_level="info",
        access_log=False,
    )
    config.load()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # accept (into the backlog) from the moment READY is printed
    guard = sys.modules["keepalive_guard"].status(import_modules=False).as_dict()
    class_status = getattr(config.http_protocol_class, "keepalive_guard_status", None)
    if class_status is not None:  # a guarded protocol class serves: report its decisions
        guard["fixes"] = [status.as_dict() for status in class_status]
    print("READY {} {}".format(sock.getsockname()[1], json.dumps(guard)), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
