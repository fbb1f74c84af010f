"""Replace attributes on uvicorn's classes, record the originals, undo exactly.

In the manner of gevent.monkey: every replaced attribute is recorded with
what the class itself held before (or that it held nothing and inherited),
so revert puts back exactly that.  A set of patches goes on whole or not at
all, and comes off whole or not at all.
"""

import functools
import weakref
from typing import Dict, List, Sequence, Tuple

from .errors import KeepaliveGuardError
from .fixes import completion
from .fixes.base import CompletionHook, MethodHook

MARK = "__keepalive_guard__"
_MISSING = object()
_ours: weakref.WeakSet = weakref.WeakSet()


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


def is_guard_object(value: object) -> bool:
    """True for anything some copy of keepalive-guard put on a class."""
    return getattr(value, MARK, None) is not None


def is_ours(value: object) -> bool:
    """True for a replacement this copy of keepalive-guard built."""
    try:
        return value in _ours
    except TypeError:  # not weak-referenceable: certainly not ours
        return False


def unwrapped(value: object) -> object:
    """``value`` with this copy's method wrappers peeled off."""
    while is_ours(value) and hasattr(value, "__wrapped__"):
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
        fixes = [fix_id for fix_id, _ in entries]
        original = getattr(cls, name)
        if all(isinstance(hook, CompletionHook) for _, hook in entries):
            wrapper = completion.wrap(entries[0][1].impl, original, frozenset(fixes))
            replacement = functools.update_wrapper(wrapper, original)
        elif all(isinstance(hook, MethodHook) for _, hook in entries):
            replacement = original
            for _, hook in entries:
                wrapped = replacement
                replacement = functools.update_wrapper(hook.factory(wrapped), wrapped)
        else:
            raise KeepaliveGuardError("{}.{}: mixed hook kinds".format(cls.__name__, name))
        setattr(replacement, MARK, tuple(fixes))
        _ours.add(replacement)
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
