"""Replace methods of uvicorn's classes, record the originals, undo exactly.

In the manner of gevent.monkey: every replaced attribute is recorded with
what the class itself held before (or that it held nothing and inherited),
so revert puts back exactly that.  A set of patches goes on whole or not at
all, and comes off whole or not at all.

A patched method is a plain function whose ``__wrapped__`` is what it
replaced, so the chain is introspectable and composes with wrapt-based
instrumentors (OpenTelemetry, ddtrace, New Relic) on the same methods:
one below ours is called bound (``fixes.base.callable_original``), as
wrapt's ``FunctionWrapper`` expects, and one above ours wraps a function
like any other.  Not a ``FunctionWrapper``
itself: binding one costs 3,000-6,000 instructions (wrapt 1.17-2.5, its C
extension), and ``on_response_complete`` is bound on every request, where
that alone is 2-4% of a small request's work (docs/design.md).
"""

import functools
import sys
import weakref
from typing import Callable, Dict, List, Sequence, Tuple

from .errors import KeepaliveGuardError
from .fixes import completion
from .fixes.base import CompletionHook, MethodHook, callable_original

MARK = "__keepalive_guard__"
_MISSING = object()
# By identity: a wrapt proxy of ours would compare and hash equal to it.
_ours: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


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


def is_ours(value: object) -> bool:
    """True for a replacement this copy of keepalive-guard built."""
    return _ours.get(id(value), _MISSING) is value


def _is_wrapt_proxy(value: object) -> bool:
    """A wrapt proxy (FunctionWrapper...): by type, which a proxy cannot forward.

    Without wrapt imported there is none.  wrapt 2 calls the root of its
    proxies BaseObjectProxy, wrapt 1 ObjectProxy.
    """
    wrapt = sys.modules.get("wrapt")
    if wrapt is None:
        return False
    return issubclass(type(value), getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy))


def _layers(value: object):
    """``value``, then each layer below it that is ours or a wrapt proxy's."""
    yield value
    while is_ours(value) or _is_wrapt_proxy(value):
        value = value.__wrapped__
        yield value


def is_guard_object(value: object) -> bool:
    """True if another copy of keepalive-guard put a layer in ``value``'s chain."""
    return any(
        not is_ours(layer) and getattr(layer, MARK, None) is not None
        for layer in _layers(value)
        if not _is_wrapt_proxy(layer)  # a proxy forwards the look-up to what it wraps
    )


def unwrapped(value: object) -> object:
    """What is below this copy's layers and wrapt proxies: uvicorn's code, if anyone's."""
    return list(_layers(value))[-1]


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
        inner = cls.__dict__[name] if name in cls.__dict__ else getattr(cls, name)
        if all(isinstance(hook, CompletionHook) for _, hook in entries):
            wrapper = completion.wrap(entries[0][1].impl, frozenset(fixes), inner)
            replacement = _mark(functools.update_wrapper(wrapper, inner), fixes)
        elif all(isinstance(hook, MethodHook) for _, hook in entries):
            replacement = inner
            for _, hook in entries:
                method = hook.factory(callable_original(replacement))
                replacement = _mark(functools.update_wrapper(method, replacement), fixes)
        else:
            raise KeepaliveGuardError("{}.{}: mixed hook kinds".format(cls.__name__, name))
        patches.append(Patch(cls, name, replacement))
    return patches


def _mark(function: Callable, fixes: "Tuple[str, ...]") -> Callable:
    setattr(function, MARK, fixes)
    _ours[id(function)] = function
    return function


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
