"""The ASGI application every real-server test serves (Python 3.6+).

``app`` speaks ASGI 3; ``ASGI2App`` is the same application as ASGI 2
(``ASGI2App(scope)`` is the instance, awaited with ``(receive, send)``),
which is what uvicorn before 0.6.0 calls (its protocols call
``app(scope)`` and it has no adapter; 0.6.x adapts an ASGI 3 app in
``Config``, 0.7.0+ calls ASGI 3 and adapts ASGI 2).

Routes (query ``s`` is a delay in seconds):
  GET  /              "ok"
  GET  /sleep?s=      sleeps, then answers (bug E)
  GET  /chunks?s=     first body chunk, sleep, last chunk (bug D)
  GET  /listen?token= answers while a background task keeps calling
                      receive() until http.disconnect (bug C); with a
                      token, when each happened is kept for /listening
  GET  /listening?token=  {"sent": t, "told": t} (time.monotonic()) of
                      that /listen or /after: its response sent, its
                      listener told
  GET  /after?token=  answers, then calls receive() once (bug B); kept for
                      /listening as /listen is
  GET  /drip?token=&s= a body of 30 chunks s seconds apart; stops at the
                      first send() that raises (bug A); then writes
                      "verify: /drip <token> done" to stderr
  ANY  /echo?s=       sleeps, reads the whole body, answers with a
                      description of the request (bug C, differential)
  GET  /stream        a streamed (chunked) response in several parts
  GET  /hold?token=&s= waits up to s seconds in receive() for http.disconnect,
                      then answers; what it got, and when, is kept (R1)
  GET  /held?token=   {"waiting": t, "told": t, "got": type} of that /hold
  POST /early         answers at once, without reading the body (R3)
  GET  /probe?token=  answers, with a weakly tracked object in its scope (R5)
  GET  /probes?token=a,b  {"alive": n}: how many of those scopes are still
                      alive after a full garbage collection
  WS   /ws            accepts and echoes text until the client leaves (E2, R2)
  GET  /_guard        this process's PID and what keepalive-guard did in it
"""

import asyncio
import gc
import json
import os
import sys
import time
import weakref
from urllib.parse import parse_qs

_background = set()
_listeners = {}  # token -> {"sent": t, "told": t}, for /listening
_holds = {}  # token -> {"waiting": t, "told": t, "got": type}, for /held
_probes = weakref.WeakValueDictionary()  # token -> the object in that request's scope


class _Probe(object):
    """Lives exactly as long as the scope of the /probe request holding it."""


def _query(scope, name, default=""):
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get(name, [default])[0]


def _delay(scope):
    return float(_query(scope, "s", "0"))


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _respond(send, body, status=200, content_type=b"text/plain"):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _listen_for_disconnect(receive, record):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            record["told"] = time.monotonic()
            return


async def _websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path, delay = scope["path"], _delay(scope)
    # /sleep and /chunks never call receive(), so bug C cannot interfere
    # with the timer bugs they exercise.
    if path == "/sleep":
        await asyncio.sleep(delay)
        await _respond(send, b"slept")
    elif path == "/chunks":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"last"})
    elif path == "/listen":
        await _read_body(receive)
        record = {}
        token = _query(scope, "token")
        if token:
            _listeners[token] = record
        task = asyncio.ensure_future(_listen_for_disconnect(receive, record))
        _background.add(task)
        task.add_done_callback(_background.discard)
        await asyncio.sleep(0.05)
        await _respond(send, b"listening")
        record.setdefault("sent", time.monotonic())
    elif path == "/after":
        await _read_body(receive)
        record = _listeners.setdefault(_query(scope, "token"), {})
        await _respond(send, b"after")
        record["sent"] = time.monotonic()
        try:
            await receive()
        finally:  # 0.2.x h11 raises instead (no receive() after the response)
            record["told"] = time.monotonic()
    elif path == "/drip":
        await _read_body(receive)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(30):
                await send({"type": "http.response.body", "body": b"x" * 64, "more_body": True})
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": b""})
        except Exception:  # the client left: a release that raises here (h11 in ERROR, 0.28.0)
            pass
        finally:  # read from the log: with several workers, a probe may reach another
            sys.stderr.write("verify: /drip {} done\n".format(_query(scope, "token")))
            sys.stderr.flush()
    elif path == "/listening":
        await _read_body(receive)
        token = _query(scope, "token")
        record = _listeners.get(token, {})
        if "told" in record:
            del _listeners[token]
        await _respond(send, json.dumps(record).encode(), content_type=b"application/json")
    elif path == "/echo":
        await asyncio.sleep(delay)
        body = await _read_body(receive)
        described = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode("latin-1"),
            "http_version": scope["http_version"],
            "headers": sorted(
                [k.decode("latin-1"), v.decode("latin-1")]
                for k, v in scope["headers"]
                if k not in (b"host", b"user-agent")
            ),
            "body": body.decode("latin-1"),
        }
        await _respond(
            send, json.dumps(described, sort_keys=True).encode(), content_type=b"application/json"
        )
    elif path == "/stream":
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/hold":
        await _read_body(receive)
        record = _holds.setdefault(_query(scope, "token"), {})
        record["waiting"] = time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), delay)
        except asyncio.TimeoutError:
            message = {"type": "timeout"}
        record["got"] = message["type"]
        if message["type"] == "http.disconnect":
            record["told"] = time.monotonic()
        await _respond(send, b"held")
    elif path == "/held":
        await _read_body(receive)
        record = _holds.get(_query(scope, "token"), {})
        await _respond(send, json.dumps(record).encode(), content_type=b"application/json")
    elif path == "/early":
        await _respond(send, b"early")
    elif path == "/probe":
        await _read_body(receive)
        probe = scope["keepalive_guard.probe"] = _Probe()
        _probes[_query(scope, "token")] = probe
        await _respond(send, b"probed")
    elif path == "/probes":
        await _read_body(receive)
        gc.collect()
        alive = sum(1 for token in _query(scope, "token").split(",") if token in _probes)
        await _respond(
            send, json.dumps({"alive": alive}).encode(), content_type=b"application/json"
        )
    elif path == "/_guard":
        await _read_body(receive)
        body = json.dumps(_guard_state(), sort_keys=True).encode()
        await _respond(send, body, content_type=b"application/json")
    else:
        await _read_body(receive)
        await _respond(send, b"ok")


class ASGI2App(object):
    """``app`` as an ASGI 2 application, for releases that call ``app(scope)``."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await app(self.scope, receive, send)


def _guard_state():
    """Which uvicorn protocol classes carry keepalive-guard hooks in this process."""
    patched = {}
    for name in (
        "uvicorn.protocols.http.h11_impl",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.protocols.http.h11",  # before 0.2.17
        "uvicorn.protocols.http.httptools",
    ):
        module = sys.modules.get(name)
        for cls_name in ("H11Protocol", "HttpToolsProtocol"):
            cls = getattr(module, cls_name, None)
            if cls is not None:
                patched[cls_name] = any(
                    getattr(value, "__keepalive_guard__", None) for value in vars(cls).values()
                )
    guarded_classes = sys.modules.get("keepalive_guard.protocols") is not None
    return {
        "pid": os.getpid(),
        "uvicorn_classes_patched": patched,
        "guarded_classes_loaded": guarded_classes,
    }
