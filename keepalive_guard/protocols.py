"""Guarded protocol classes: choose the fixes per server, not per process.

    uvicorn.run(app, http=keepalive_guard.protocols.AutoHTTPProtocol)
    uvicorn.Config(app, http=keepalive_guard.protocols.H11Protocol)
    uvicorn app:app --http keepalive_guard.protocols:HttpToolsProtocol   # uvicorn >= 0.36
    uvicorn app:app --http guarded        # any release, names registered at start-up

Where a release can take a class: ``Config(http=...)`` and
``uvicorn.run(..., http=...)`` from 0.3.26 (``run`` takes keywords only,
``app=`` too, in 0.3.26-0.3.30); the ``--http guarded`` names wherever
``uvicorn.config`` exists (0.3.26+); gunicorn (``keepalive_guard.workers``)
on every release but 0.3.26-0.3.27, whose own workers cannot start; on
0.2.0-0.2.20, ``uvicorn.main.Server(app, ..., protocol_class=...)``.
Before 0.3.26 ``uvicorn.run`` takes no class (0.2.0-0.2.20: no ``http`` at
all; 0.2.21-0.3.25: a name of its own table): use ``install()``,
``KEEPALIVE_GUARD=1`` or ``keepalive-guard run`` there.

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
from .fixes.a_early_disconnect import CYCLE
from .fixes.base import PROTOCOL, MethodHook
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
    protocol_hooks = [(fix, hook) for fix, hook in plan.hooks if hook.role != CYCLE]
    cycle_hooks = [(fix, hook) for fix, hook in plan.hooks if hook.role == CYCLE]
    patches = patcher.build(protocol_hooks, dict(plan.classes, protocol=cls))
    if cycle_hooks:
        patches += _guarded_cycles(plan, cls, cycle_hooks)
    patcher.apply_all(patches)
    log_decision(
        "{} for uvicorn {} ({})".format(cls.__name__, plan.version_text, impl.name), plan.statuses
    )
    return cls


def _guarded_cycles(plan: "decide.Plan", cls: type, hooks: list) -> list:
    """Patches that give ``cls``'s requests a guarded subclass of uvicorn's cycle.

    A (0.2.0-0.2.5) and B (0.2.21-0.3.26) hook the cycle's ``send`` and
    ``receive``; uvicorn's own cycle class must stay untouched, and the
    protocol makes its cycles from the module global.  So the hooks go on a
    subclass (``__slots__ = ()``: same layout, also where 0.2.0-0.2.20
    httptools cycles use slots), and the one protocol method that makes
    cycles (the one naming ``RequestResponseCycle``: h11 ``data_received`` to
    0.2.6, then ``handle_events``; httptools ``on_headers_complete``) switches
    each new cycle to it before its task first runs.
    """
    base_cycle = plan.classes[CYCLE]
    guarded_cycle = type(
        "Guarded" + base_cycle.__name__, (base_cycle,), {"__module__": __name__, "__slots__": ()}
    )
    makers = [
        name
        for name, value in vars(plan.classes["protocol"]).items()
        if base_cycle.__name__ in getattr(getattr(value, "__code__", None), "co_names", ())
    ]
    if len(makers) != 1:
        raise KeepaliveGuardError(
            "uvicorn {}: {} cannot carry {} (the method making requests is not known: {}); "
            "use keepalive_guard.install() instead".format(
                plan.version_text,
                cls.__name__,
                ", ".join(sorted(set(fix for fix, _ in hooks))),
                ", ".join(makers) or "none",
            )
        )

    def switch_new_cycle(original):
        def make(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            cycle = self.cycle
            if type(cycle) is base_cycle:
                cycle.__class__ = guarded_cycle
            return result

        return make

    fixes = tuple(sorted(set(fix for fix, _ in hooks)))
    return patcher.build(hooks, {CYCLE: guarded_cycle}) + patcher.build(
        [(fix, MethodHook(PROTOCOL, makers[0], switch_new_cycle)) for fix in fixes[:1]],
        {PROTOCOL: cls},
    )


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
