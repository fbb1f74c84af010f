"""gunicorn worker classes that serve through keepalive-guard's protocol classes.

    gunicorn -k keepalive_guard.workers.UvicornWorker app:app
    gunicorn -k keepalive_guard.workers.UvicornH11Worker app:app

Subclasses of the ``uvicorn-worker`` package's workers when it is installed,
else of ``uvicorn.workers`` (deprecated upstream since uvicorn 0.30).  Each
keeps its base's settings and swaps the ``http`` entry of ``CONFIG_KWARGS``
(merged last into ``Config`` on every release) for the guarded class of the
same implementation; uvicorn's own classes are not touched.

gunicorn makes each worker object in the master and forks: the guarded
class is built there, so its log line is held (``serverlog.held``) and each
worker logs it after the fork, in the server's log (``serverlog.release``).
"""

from . import protocols, serverlog

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


class UvicornWorker(_BaseWorker):
    """The base ``UvicornWorker`` with keepalive-guard's fixes."""

    CONFIG_KWARGS = _GuardedKwargs(_BaseWorker)
    __init__ = _held_init(_BaseWorker)
    init_process = _init_process(_BaseWorker)


class UvicornH11Worker(_BaseH11Worker):
    """The base ``UvicornH11Worker`` (asyncio, h11) with keepalive-guard's fixes."""

    CONFIG_KWARGS = _GuardedKwargs(_BaseH11Worker)
    __init__ = _held_init(_BaseH11Worker)
    init_process = _init_process(_BaseH11Worker)


__all__ = ["UvicornH11Worker", "UvicornWorker"]
