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
Importing this module imports uvicorn's protocol modules.
"""

import logging
from typing import List

from . import config, decide, patcher
from .errors import KeepaliveGuardError
from .fixes.base import CYCLE
from .implementations import H11, HTTPTOOLS, IMPLEMENTATIONS
from .report import UNRECOGNISED, FixStatus

logger = logging.getLogger("keepalive_guard")


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
        "Guarded" + base.__name__,
        (base,),
        {
            "__module__": __name__,
            "__doc__": "uvicorn {} {} with keepalive-guard's fixes.".format(
                plan.version_text, base.__name__
            ),
            "keepalive_guard_status": plan.statuses,
        },
    )
    if any(hook.role == CYCLE for _, hook in plan.hooks):
        raise KeepaliveGuardError("a fix hooks the cycle class, which a subclass cannot reach")
    patcher.apply_all(patcher.build(plan.hooks, dict(plan.classes, protocol=cls)))
    _log(cls, plan.version_text, impl.name, plan.statuses)
    return cls


def _log(cls: type, version: str, impl: str, statuses: List[FixStatus]) -> None:
    for s in statuses:
        if s.state == UNRECOGNISED:
            logger.warning(
                "keepalive-guard: %s: fix %s not applied: %s", cls.__name__, s.fix, s.reason
            )
    logger.info(
        "keepalive-guard: %s for uvicorn %s (%s): %s",
        cls.__name__,
        version,
        impl,
        ", ".join("{} {}".format(s.fix, s.state) for s in statuses),
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
        return type(implementation + "Unavailable", (_Unavailable,), {"reason": str(exc)})


H11Protocol = guarded_class(H11)
HttpToolsProtocol = _build_or_placeholder(HTTPTOOLS)
AutoHTTPProtocol = H11Protocol if issubclass(HttpToolsProtocol, _Unavailable) else HttpToolsProtocol

__all__ = ["AutoHTTPProtocol", "H11Protocol", "HttpToolsProtocol", "guarded_class"]
