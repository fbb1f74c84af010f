"""Wrap methods of uvicorn's classes with wrapt, record the originals, undo exactly.

Each patched method becomes a ``wrapt.FunctionWrapper`` (our subclass,
``GuardWrapper``), so the chain is introspectable through ``__wrapped__``
and composes with other wrapt-based instrumentors (OpenTelemetry, ddtrace,
New Relic) wrapping the same methods, below or above us.  In the manner of
gevent.monkey, every replaced attribute is recorded with what the class
itself held before (or that it held nothing and inherited), so revert puts
back exactly that.  A set of patches goes on whole or not at all, and comes
off whole or not at all.
"""

import types
from typing import Dict, List, Sequence, Tuple

import wrapt

from .errors import KeepaliveGuardError
from .fixes import completion
from .fixes.base import CompletionHook, MethodHook

_MISSING = object()


class GuardWrapper(wrapt.FunctionWrapper):
    """A keepalive-guard layer; ``_self_fixes`` names the fixes it carries.

    Recognised by its exact type (``type()``, which a proxy cannot forward,
    unlike ``isinstance`` and attribute look-ups); another copy of the
    package has its own class with the same ``keepalive_guard_layer`` mark.
    """

    keepalive_guard_layer = True


class Patch(object):
    """One attribute of one class, replaced."""

    def __init__(self, cls: type, name: str, replacement: object) -> None:
        self.cls = cls
        self.name = name
        self.original = cls.__dict__.get(name, _MISSING)
        self.replacement = replacement

    @property
    def target(self) -> str:
        return "{}.{}".format(self.cls.__name__, self.name)

    def is_current(self) -> bool:
        return self.cls.__dict__.get(self.name, _MISSING) is self.replacement

    def apply(self) -> None:
        setattr(self.cls, self.name, self.replacement)

    def revert(self) -> None:
        if self.original is _MISSING:
            delattr(self.cls, self.name)
        else:
            setattr(self.cls, self.name, self.original)


def _is_proxy(value: object) -> bool:
    return isinstance(type(value), type) and issubclass(type(value), wrapt.ObjectProxy)


def is_guard_object(value: object) -> bool:
    """True if some copy of keepalive-guard put a layer in ``value``'s wrapt chain
    other than this copy (whose layers ``decide`` looks through)."""
    while _is_proxy(value):
        if getattr(type(value), "keepalive_guard_layer", False) and type(value) is not GuardWrapper:
            return True
        value = value.__wrapped__
    return False


def unwrapped(value: object) -> object:
    """The function at the bottom of ``value``'s wrapt chain (ours and others' layers)."""
    while _is_proxy(value):
        value = value.__wrapped__
    return value


def build(hooks: "Sequence[Tuple[str, object]]", classes: "Dict[str, type]") -> "List[Patch]":
    """One Patch per (class, attribute), composing the hooks of every fix.

    ``hooks`` is a sequence of (fix id, hook) in catalogue order; completion
    hooks become the one wrapper of ``fixes/completion.py``; method hooks on
    the same method nest, earliest fix innermost.
    """
    grouped: Dict[Tuple[str, str], List[Tuple[str, object]]] = {}
    for fix_id, hook in hooks:
        grouped.setdefault((hook.role, hook.name), []).append((fix_id, hook))
    patches = []
    for (role, name), entries in grouped.items():
        cls = classes[role]
        fixes = tuple(fix_id for fix_id, _ in entries)
        replacement = getattr(cls, name) if name not in cls.__dict__ else cls.__dict__[name]
        if all(isinstance(hook, CompletionHook) for _, hook in entries):
            direct = isinstance(replacement, types.FunctionType)
            wrapper = completion.wrap(entries[0][1].impl, frozenset(fixes), direct)
            replacement = GuardWrapper(replacement, wrapper)
        elif all(isinstance(hook, MethodHook) for _, hook in entries):
            for _, hook in entries:
                replacement = GuardWrapper(replacement, hook.wrapper)
        else:
            raise KeepaliveGuardError("{}.{}: mixed hook kinds".format(cls.__name__, name))
        replacement._self_fixes = fixes
        patches.append(Patch(cls, name, replacement))
    return patches


def apply_all(patches: "Sequence[Patch]") -> None:
    """Apply every patch or, if one fails, none."""
    done = []
    try:
        for patch in patches:
            patch.apply()
            done.append(patch)
    except BaseException:
        for patch in reversed(done):
            patch.revert()
        raise


def revert_all(patches: "Sequence[Patch]") -> None:
    """Revert every patch, or refuse (changing nothing) if one was replaced since."""
    foreign = [patch.target for patch in patches if not patch.is_current()]
    if foreign:
        raise KeepaliveGuardError(
            "cannot revert: {} replaced by someone else after keepalive-guard "
            "patched it; nothing was reverted".format(", ".join(foreign))
        )
    for patch in reversed(patches):
        patch.revert()
