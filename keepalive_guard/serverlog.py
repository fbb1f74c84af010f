"""Route the guard's log lines into a uvicorn server's log, once per process.

The guard logs to the ``keepalive_guard`` logger.  Since about 0.11.1
uvicorn configures only its own loggers (``uvicorn``, ``uvicorn.error``,
``uvicorn.access``) and leaves the root logger alone, so by default those
lines went nowhere; older releases configure the root logger, where they
propagate by themselves.  ``attach(logger)`` puts one filter on the
guard's logger that decides, record by record:

* shown elsewhere: a handler on the way up (the user's logging
  configuration, an old uvicorn's root handler, pytest's) takes it: the
  record goes its ordinary way, at the level it would have had without this
  module (so nothing prints twice and nothing new appears outside uvicorn);
* else, if uvicorn's logging is configured (``uvicorn.error`` or
  ``uvicorn`` has a handler: uvicorn's own dictConfig, gunicorn's worker),
  it goes to ``uvicorn.error``'s handlers, in uvicorn's format, at
  ``uvicorn.error``'s level (``--log-level``);
* else (uvicorn has not configured logging yet: a protocol class built
  before ``Config``, a module patched before the server starts) it waits,
  and is replayed when uvicorn configures logging (``Config.configure_logging``
  on 0.11+, ``get_logger`` before), or at exit as the logging module would
  have shown it (a WARNING through ``logging.lastResort``).

``held()`` / ``release()``: the gunicorn workers build their protocol class
in the master, before forking: records made while held wait, and each
worker releases them after the fork, so each worker logs the line once and
the master not at all.
"""

import atexit
import contextlib
import functools
import logging
import os
import threading
from typing import Iterator, List

import _keepalive_guard_boot

#: the guard logger's own level while attached: every record is made, and
#: the filter applies the level it would have had (the parent's)
_ATTACHED_LEVEL = 1
_MAX_WAITING = 100

_lock = threading.RLock()
_waiting: "List[logging.LogRecord]" = []
_state = {"held": 0, "hooked": False, "pid": None, "exit": False}


def attach(logger: logging.Logger) -> None:
    """Route ``logger``'s records as the module docstring says; idempotent."""
    if any(isinstance(f, _Route) for f in logger.filters):
        return
    if logger.level == logging.NOTSET:  # a level the user set is theirs
        logger.setLevel(_ATTACHED_LEVEL)
    logger.addFilter(_Route(logger))


class _Route(logging.Filter):
    def __init__(self, logger: logging.Logger) -> None:
        logging.Filter.__init__(self)
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self._route(record)
        except Exception:  # routing must never break what logs: the ordinary way then
            return True

    def _route(self, record: logging.LogRecord) -> bool:
        if _state["held"] and not getattr(record, "_keepalive_guard_replay", False):
            record._keepalive_guard_held = True  # for the forked workers, not this process
            return _wait(record)
        if _shown_elsewhere(self.logger, record):
            return record.levelno >= _level_without_us(self.logger)
        target = _uvicorn_logger()
        if target is not None:
            if target.isEnabledFor(record.levelno):
                target.handle(record)
            return False
        return _wait(record)  # (a replayed record too: uvicorn was told to log nowhere yet)


def _level_without_us(logger: logging.Logger) -> int:
    if logger.level != _ATTACHED_LEVEL:
        return logger.level
    parent = logger.parent
    return parent.getEffectiveLevel() if parent is not None else logging.WARNING


def _shown_elsewhere(logger: logging.Logger, record: logging.LogRecord) -> bool:
    """True if a handler on the way up from ``logger`` takes ``record``."""
    current = logger
    while current is not None:
        if any(record.levelno >= handler.level for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _uvicorn_logger() -> "logging.Logger | None":
    """``uvicorn.error`` if uvicorn (or gunicorn for it) gave it a handler, else None."""
    manager = logging.Logger.manager.loggerDict
    error = manager.get("uvicorn.error")
    if not isinstance(error, logging.Logger):
        return None
    current = error
    while isinstance(current, logging.Logger) and current.name.startswith("uvicorn"):
        if current.handlers:
            return error
        if not current.propagate:
            return None
        current = current.parent
    return None


def _wait(record: logging.LogRecord) -> bool:
    with _lock:
        if _state["pid"] != os.getpid():  # a forked child: what waits is its own now
            _state["pid"], _state["hooked"] = os.getpid(), False
        if len(_waiting) < _MAX_WAITING:
            _waiting.append(record)
        hook = not _state["hooked"]
        _state["hooked"] = True
        if not _state["exit"]:
            atexit.register(_at_exit)
            _state["exit"] = True
    if hook:  # (callbacks that never break the import they run in)
        quietly = _keepalive_guard_boot._quietly
        _keepalive_guard_boot.when_imported("uvicorn.config", quietly(_hook_config))
        _keepalive_guard_boot.when_imported("uvicorn.main", quietly(_hook_main))
    return False


@contextlib.contextmanager
def held() -> "Iterator[None]":
    """Records made inside wait for ``release()`` (even where uvicorn logs)."""
    with _lock:
        _state["held"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["held"] -= 1


def release() -> None:
    """Show what waits, where it belongs now; once per process."""
    with _lock:
        records = list(_waiting)
        del _waiting[:]
    for record in records:
        record._keepalive_guard_replay = True
        record._keepalive_guard_held = False  # this process's own now
        record.process = os.getpid()  # made before a fork: it speaks for this process
        logging.getLogger(record.name).handle(record)


def _at_exit() -> None:
    """Never replayed: show what the logging module would have (lastResort)."""
    with _lock:
        records = [r for r in _waiting if not getattr(r, "_keepalive_guard_held", False)]
        if _state["pid"] not in (None, os.getpid()):
            records = []
        del _waiting[:]
    last_resort = getattr(logging, "lastResort", None)
    for record in records:
        logger = logging.getLogger(record.name)
        if last_resort is not None and record.levelno >= max(
            last_resort.level, _level_without_us(logger)
        ):
            last_resort.handle(record)


def _after(function):
    """``function`` followed by ``release()``; marked so it is wrapped once."""
    if getattr(function, "_keepalive_guard_release", False):
        return function

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            if not _state["held"]:
                release()

    wrapper._keepalive_guard_release = True
    return wrapper


def _hook_config(module) -> None:
    """Release after uvicorn configures logging: ``Config.configure_logging`` (0.11+),
    ``uvicorn.config.get_logger`` (0.4-0.10)."""
    config = getattr(module, "Config", None)
    if config is not None and callable(getattr(config, "configure_logging", None)):
        config.configure_logging = _after(config.configure_logging)
    elif callable(getattr(module, "get_logger", None)):
        module.get_logger = _after(module.get_logger)


def _hook_main(module) -> None:
    """``uvicorn.main.get_logger`` (0.2-0.3, and the name 0.4-0.10 import from config)."""
    if callable(getattr(module, "get_logger", None)):
        module.get_logger = _after(module.get_logger)
