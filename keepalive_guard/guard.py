"""install / uninstall / status: the guard's life cycle.

In the manner of OpenTelemetry's BaseInstrumentor: idempotent, safe from any
thread, in any order, before or after uvicorn is imported.  Modules already
imported are patched at once; the others as they finish importing, through
wrapt's post-import hooks.  What the release's version settles is decided
at once, before the modules load (``decide.version_decision``); the rest
from the installed code (see ``decide``); anything not recognised is left
alone and reported.
"""

import sys
import threading
from typing import Dict, List, Optional, Tuple

from . import config, decide, patcher
from .errors import KeepaliveGuardError
from .fixes import CATALOGUE, DEFAULT_FIX_IDS
from .implementations import (
    IMPLEMENTATIONS,
    Implementation,
    distribution_version,
    uvicorn_version_text,
)
from .report import (
    APPLIED,
    NOT_APPLICABLE,
    PENDING,
    UNRECOGNISED,
    FixStatus,
    Report,
    log_decision,
)

_lock = threading.RLock()


class _Applied(object):
    """What the guard did to one implementation module."""

    def __init__(self, statuses: "List[FixStatus]", patches: "List[patcher.Patch]") -> None:
        self.statuses = statuses
        self.patches = patches


class _State(object):
    installed = False
    strict = False
    selection: Tuple[str, ...] = DEFAULT_FIX_IDS
    applied: Dict[str, _Applied] = {}
    hooks_registered = False


_state = _State()


def install(fixes: config.Selection = None, strict: bool = False) -> Report:
    """Patch uvicorn (now, or when it is imported) with the selected fixes.

    ``fixes``: see ``keepalive_guard.config`` for the syntax; None reads
    ``KEEPALIVE_GUARD_FIXES`` and defaults to all.  ``strict`` (or
    ``KEEPALIVE_GUARD_STRICT=1``) raises KeepaliveGuardError instead of
    skipping a fix whose target code is not recognised; nothing is changed
    then.  Calling it again with the same arguments changes nothing; with
    other arguments it re-applies atomically.
    """
    selection = config.parse_fixes(fixes)
    strict = bool(strict) or config.env_flag(config.STRICT)
    with _lock:
        if not (_state.installed and _state.selection == selection and _state.strict == strict):
            _reconfigure(selection, strict)
        if not _state.hooks_registered:
            # Only for modules still to load: with uvicorn's protocol modules
            # imported already, wrapt (about half of activation) is not.
            waiting = [n for i in IMPLEMENTATIONS if i.loaded_module() is None for n in i.modules]
            if waiting:
                import wrapt

                for name in waiting:
                    wrapt.register_post_import_hook(_on_import, name)
            _state.hooks_registered = True
    return status(import_modules=False)


def uninstall() -> Report:
    """Restore every original uvicorn attribute exactly; idempotent."""
    with _lock:
        _revert_everything()
        _state.installed = False
    return status(import_modules=False)


def status(import_modules: bool = True) -> Report:
    """The guard's decisions per fix and implementation, with versions.

    With ``import_modules`` (the default) uvicorn's protocol modules are
    imported so that every implementation gets a decision; if the guard is
    installed, that import applies it, as serving a request would.  Without
    it, nothing is imported and versions of libraries not yet imported are
    None.
    """
    modules = {}
    for impl in IMPLEMENTATIONS:
        module = impl.loaded_module()
        if module is not None and _state.installed and impl.name not in _state.applied:
            _on_import(module)  # it finished loading while install() was looking away
        why = None
        if module is None and import_modules:
            module, why = impl.import_module()
        modules[impl.name] = (module, why)
    versions = {
        name: distribution_version(name) if import_modules or name in sys.modules else None
        for name in ("uvicorn", "h11", "httptools")
    }
    with _lock:
        statuses: List[FixStatus] = []
        for impl in IMPLEMENTATIONS:
            applied = _state.applied.get(impl.name)
            if applied is not None:
                statuses.extend(applied.statuses)
                continue
            module, why = modules[impl.name]
            if module is None:
                statuses.extend(_not_loaded(impl, why))
                continue
            plan = decide.plan(impl, module, _state.selection)
            reason = "keepalive-guard is {}".format(
                "installed but this module was not patched" if _state.installed else "not installed"
            )
            statuses.extend(_pending(plan.statuses, reason))
        return Report(_state.installed, _state.strict, list(_state.selection), versions, statuses)


def _not_loaded(impl: Implementation, why: "Optional[str]") -> "List[FixStatus]":
    """Each fix's state while ``impl``'s module is not loaded: what the version settles,
    else pending; all not applicable if the module cannot be imported (``why``)."""
    if why is not None:
        return [
            FixStatus(fix.id, impl.name, NOT_APPLICABLE, why, fix.upstream)
            for fix in CATALOGUE.values()
        ]
    version_text = uvicorn_version_text()
    statuses = []
    for fix in CATALOGUE.values():
        state, reason = decide.version_decision(fix, impl.name, version_text, _state.selection) or (
            PENDING,
            "{} not imported yet".format(impl.module),
        )
        statuses.append(FixStatus(fix.id, impl.name, state, reason, fix.upstream))
    return statuses


def _pending(statuses: "List[FixStatus]", reason: str) -> "List[FixStatus]":
    return [
        FixStatus(s.fix, s.implementation, PENDING, reason, s.upstream) if s.state == APPLIED else s
        for s in statuses
    ]


def _on_import(module: object) -> None:
    """Post-import hook: patch a uvicorn protocol module as it loads."""
    impl = next(i for i in IMPLEMENTATIONS if getattr(module, "__name__", None) in i.modules)
    if impl.loaded_module() is not module:
        # wrapt calls a hook at once for a module still executing (install()
        # called from inside its import): not patched; status() will.
        return
    with _lock:
        if not _state.installed or impl.name in _state.applied:
            return
        plan = decide.plan(impl, module, _state.selection)
        if _state.strict:
            _raise_if_unrecognised([plan])
        _apply(impl, plan)


def _reconfigure(selection: "Tuple[str, ...]", strict: bool) -> None:
    """Replace what is applied by ``selection``; on any failure, change nothing.

    Decisions are made first (``decide`` sees through our own patches), so a
    strict refusal or a foreign patch stops everything before any attribute
    moves; the previous patches are restored object for object if applying
    the new ones fails.
    """
    plans = []
    for impl in IMPLEMENTATIONS:
        module = impl.loaded_module()
        if module is not None:
            plans.append((impl, decide.plan(impl, module, selection)))
    if strict:
        _raise_if_unrecognised([plan for _, plan in plans])
    previous = dict(_state.applied)
    _revert_everything()
    try:
        for impl, plan in plans:
            _apply(impl, plan)
    except BaseException:
        _revert_everything()
        for name, applied in previous.items():
            patcher.apply_all(applied.patches)
            _state.applied[name] = applied
        raise
    _state.installed, _state.selection, _state.strict = True, selection, strict


def _raise_if_unrecognised(plans: "List[decide.Plan]") -> None:
    bad = [s for plan in plans for s in plan.statuses if s.state == UNRECOGNISED]
    if bad:
        raise KeepaliveGuardError(
            "strict mode: nothing patched; "
            + "; ".join("{} ({}): {}".format(s.fix, s.implementation, s.reason) for s in bad)
        )


def _apply(impl: Implementation, plan: "decide.Plan") -> None:
    patches = patcher.build(plan.hooks, plan.classes)
    patcher.apply_all(patches)
    _state.applied[impl.name] = _Applied(plan.statuses, patches)
    log_decision("uvicorn {} ({})".format(plan.version_text, impl.name), plan.statuses)


def _revert_everything() -> None:
    applied = list(_state.applied.items())
    foreign = [p.target for _, a in applied for p in a.patches if not p.is_current()]
    if foreign:
        raise KeepaliveGuardError(
            "cannot uninstall: {} replaced by someone else after keepalive-guard "
            "patched it; nothing was reverted".format(", ".join(foreign))
        )
    for name, applied_module in applied:
        patcher.revert_all(applied_module.patches)
        del _state.applied[name]
