"""gunicorn worker classes that serve through keepalive-guard's protocol classes.

    gunicorn -k keepalive_guard.workers.UvicornWorker app:app
    gunicorn -k keepalive_guard.workers.UvicornH11Worker app:app

Subclasses of the ``uvicorn-worker`` package's workers when it is installed,
else of ``uvicorn.workers`` (deprecated upstream since uvicorn 0.30).  Each
keeps its base's settings and swaps the ``http`` entry of ``CONFIG_KWARGS``
(merged last into ``Config`` from 0.4.0) for the guarded class of the same
implementation; before 0.4.0 the workers name their protocol class in
``protocol_class`` (0.2.0-0.3.32), which is swapped the same way.  uvicorn's
own classes are not touched.

gunicorn makes each worker object in the master and forks: the guarded
class is built there, so its log line is held (``serverlog.held``) and each
worker logs it after the fork, in the server's log (``serverlog.release``).
"""

import sys

from . import protocols, serverlog

try:
    from uvicorn_worker import UvicornH11Worker as _BaseH11Worker
    from uvicorn_worker import UvicornWorker as _BaseWorker
except ImportError:
    from uvicorn.workers import UvicornH11Worker as _BaseH11Worker
    from uvicorn.workers import UvicornWorker as _BaseWorker


def _cannot_start(base: type) -> str:
    """Why ``base`` cannot serve at all, or ''.

    uvicorn 0.3.26 and 0.3.27's ``create_servers`` builds a ``Config`` that
    ``uvicorn.workers`` never imports (NameError in every worker; 0.3.28
    imports it): no subclass can serve there.
    """
    code = getattr(getattr(base, "create_servers", None), "__code__", None)
    module = sys.modules.get(base.__module__)
    if code is not None and "Config" in code.co_names and not hasattr(module, "Config"):
        return (
            "uvicorn {}'s gunicorn worker cannot start: {}.create_servers() uses Config, "
            "which uvicorn.workers does not import (fixed in 0.3.28); serve with "
            "KEEPALIVE_GUARD=1 uvicorn ... or keepalive-guard run -- uvicorn ... instead".format(
                getattr(sys.modules.get("uvicorn"), "__version__", "?"), base.__name__
            )
        )
    return ""


if _cannot_start(_BaseWorker):
    raise ImportError(_cannot_start(_BaseWorker))

_GUARDED = {"auto": "AutoHTTPProtocol", "h11": "H11Protocol", "httptools": "HttpToolsProtocol"}


class _GuardedKwargs(object):
    """``base.CONFIG_KWARGS`` with the guarded class, built when a worker first reads it
    (so only the implementation the worker serves with is imported)."""

    def __init__(self, base: type) -> None:
        self.base = base
        self.kwargs = None

    def __get__(self, instance: object, owner: type) -> dict:
        if self.kwargs is None:
            kwargs = dict(self.base.CONFIG_KWARGS)
            name = _GUARDED.get(kwargs.get("http", "auto"), "AutoHTTPProtocol")
            kwargs["http"] = getattr(protocols, name)
            self.kwargs = kwargs
        return self.kwargs


class _GuardedProtocolClass(object):
    """``base.protocol_class`` (0.2.0-0.3.32) as the guarded class of its
    implementation, built when a worker first reads it."""

    def __init__(self, base: type) -> None:
        self.base = base
        self.cls = None

    def __get__(self, instance: object, owner: type) -> type:
        if self.cls is None:
            self.cls = getattr(protocols, self.base.protocol_class.__name__)
        return self.cls


def _held_init(base: type):
    def __init__(self, *args, **kwargs):
        with serverlog.held():  # in gunicorn's master
            base.__init__(self, *args, **kwargs)

    return __init__


def _init_process(base: type):
    def init_process(self):
        serverlog.release()  # in the forked worker, its log set up
        base.init_process(self)

    return init_process


def _guarded(base: type) -> dict:
    """The class attribute that makes a subclass of ``base`` serve guarded."""
    if hasattr(base, "CONFIG_KWARGS"):
        return {"CONFIG_KWARGS": _GuardedKwargs(base)}
    return {"protocol_class": _GuardedProtocolClass(base)}


def _worker(name: str, base: type, doc: str) -> type:
    attributes = dict(_guarded(base), __doc__=doc, __module__=__name__)
    attributes.update(__init__=_held_init(base), init_process=_init_process(base))
    return type(name, (base,), attributes)


UvicornWorker = _worker(
    "UvicornWorker", _BaseWorker, "The base ``UvicornWorker`` with keepalive-guard's fixes."
)
UvicornH11Worker = _worker(
    "UvicornH11Worker",
    _BaseH11Worker,
    "The base ``UvicornH11Worker`` (asyncio, h11) with keepalive-guard's fixes.",
)


__all__ = ["UvicornH11Worker", "UvicornWorker"]
