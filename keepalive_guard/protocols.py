"""Guarded protocol classes: choose the fixes per server, not per process.

    uvicorn.run(app, http=keepalive_guard.protocols.AutoHTTPProtocol)
    uvicorn.Config(app, http=keepalive_guard.protocols.H11Protocol)
    uvicorn app:app --http keepalive_guard.protocols:HttpToolsProtocol   # uvicorn >= 0.36
    uvicorn app:app --http guarded        # any release, names registered at start-up

Each class subclasses uvicorn's own class of the installed release and
carries the same fix hooks that ``install()`` puts on uvicorn's classes,
decided the same way, on the subclass only: uvicorn's classes are not
touched.  ``AutoHTTPProtocol`` is the httptools class when httptools is
importable, else the h11 one, as uvicorn's ``auto`` does.  Each class has a
``keepalive_guard_status`` list saying what was decided.  Fix selection and
strictness come from ``KEEPALIVE_GUARD_FIXES`` / ``KEEPALIVE_GUARD_STRICT``.
Each class is built, and its uvicorn module imported, on first use
(Python 3.7+; on 3.6 importing this module builds all three).

The classes pickle by name, like any module-level class: each is named as
the module attribute it is reached by (``H11Protocol``, ``HttpToolsProtocol``;
``AutoHTTPProtocol`` is one of those two), so the ``Config`` that
``--workers`` and ``--reload`` send to their spawned children unpickles there
to the same class, built in the child.
"""

import sys
import threading

from . import config, decide, patcher
from .errors import KeepaliveGuardError
from .implementations import H11, HTTPTOOLS, IMPLEMENTATIONS
from .report import UNRECOGNISED, log_decision

#: each class is named as the module attribute that finds it again (pickle)
CLASS_NAMES = {H11: "H11Protocol", HTTPTOOLS: "HttpToolsProtocol"}


def guarded_class(
    implementation: str, fixes: config.Selection = None, strict: bool = False
) -> type:
    """A subclass of uvicorn's ``implementation`` protocol with the selected fixes."""
    impl = next((i for i in IMPLEMENTATIONS if i.name == implementation), None)
    if impl is None:
        raise KeepaliveGuardError(
            "unknown implementation {!r}; use {}".format(
                implementation, " or ".join(i.name for i in IMPLEMENTATIONS)
            )
        )
    selection = config.parse_fixes(fixes)
    strict = bool(strict) or config.env_flag(config.STRICT)
    module, why = impl.import_module()
    if module is None:
        raise ImportError(why)
    plan = decide.plan(impl, module, selection)
    unrecognised = [s for s in plan.statuses if s.state == UNRECOGNISED]
    if strict and unrecognised:
        raise KeepaliveGuardError(
            "strict mode: " + "; ".join("{}: {}".format(s.fix, s.reason) for s in unrecognised)
        )
    base = plan.classes["protocol"]
    cls = type(
        CLASS_NAMES[impl.name],
        (base,),
        {
            "__module__": __name__,
            "__doc__": "uvicorn {} {} with keepalive-guard's fixes.".format(
                plan.version_text, base.__name__
            ),
            "keepalive_guard_status": plan.statuses,
        },
    )
    patcher.apply_all(patcher.build(plan.hooks, dict(plan.classes, protocol=cls)))
    log_decision(
        "{} for uvicorn {} ({})".format(cls.__name__, plan.version_text, impl.name), plan.statuses
    )
    return cls


class _Unavailable(object):
    """Stands in for a class whose implementation cannot be imported here."""

    reason = ""

    def __init__(self, *args, **kwargs):
        raise ImportError(self.reason)


def _build_or_placeholder(implementation: str) -> type:
    try:
        return guarded_class(implementation)
    except ImportError as exc:
        return type(
            CLASS_NAMES[implementation],
            (_Unavailable,),
            {"__module__": __name__, "reason": str(exc)},
        )


_lock = threading.RLock()  # two threads asking first get the same class


def _build(name: str) -> type:
    """The class ``name``, built on first use and kept as a module global."""
    with _lock:
        cls = globals().get(name)
        if cls is not None:
            return cls
        if name == "AutoHTTPProtocol":
            cls = _build("HttpToolsProtocol")
            if issubclass(cls, _Unavailable):
                cls = _build("H11Protocol")
        elif name == "H11Protocol":
            cls = guarded_class(H11)
        else:
            cls = _build_or_placeholder(HTTPTOOLS)
        globals()[name] = cls
        return cls


CLASSES = ("AutoHTTPProtocol", "H11Protocol", "HttpToolsProtocol")
__all__ = list(CLASSES) + ["guarded_class"]

if sys.version_info >= (3, 7):

    def __getattr__(name: str) -> type:
        """Build a class on first use: only the implementation a server uses is imported."""
        if name in CLASSES:
            return _build(name)
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))

else:  # no module __getattr__ (PEP 562): build all three now
    for _name in CLASSES:
        _build(_name)
