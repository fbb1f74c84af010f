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
"""

from . import protocols

try:
    from uvicorn_worker import UvicornH11Worker as _BaseH11Worker
    from uvicorn_worker import UvicornWorker as _BaseWorker
except ImportError:
    from uvicorn.workers import UvicornH11Worker as _BaseH11Worker
    from uvicorn.workers import UvicornWorker as _BaseWorker

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


def _guarded(base: type) -> dict:
    """The class attribute that makes a subclass of ``base`` serve guarded."""
    if hasattr(base, "CONFIG_KWARGS"):
        return {"CONFIG_KWARGS": _GuardedKwargs(base)}
    return {"protocol_class": _GuardedProtocolClass(base)}


UvicornWorker = type(
    "UvicornWorker",
    (_BaseWorker,),
    dict(_guarded(_BaseWorker), __doc__="The base ``UvicornWorker`` with keepalive-guard's fixes."),
)
UvicornH11Worker = type(
    "UvicornH11Worker",
    (_BaseH11Worker,),
    dict(
        _guarded(_BaseH11Worker),
        __doc__="The base ``UvicornH11Worker`` (asyncio, h11) with keepalive-guard's fixes.",
    ),
)


__all__ = ["UvicornH11Worker", "UvicornWorker"]
