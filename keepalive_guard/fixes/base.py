"""What a fix is: where it hooks into uvicorn and which releases need it.

A fix never replaces a whole uvicorn method.  It adds a small piece of
behaviour before or after a method of the protocol class or of the
request/response cycle class: ``on_response_complete`` (every fix that acts
when a response completes, through one shared wrapper, where E also stands
in for the original when a buffered request can start; ``CompletionHook``),
or one method per ``MethodHook`` (``connection_made``, ``connection_lost``,
the upgrade method, the cycle's ``send`` and ``receive``).  The patcher
builds one replacement per method (``patcher``).
"""

import types
from typing import Callable, Dict, Optional, Tuple

from ..implementations import IMPLEMENTATIONS, Release, release

# The role of the class every hook targets (see implementations.Implementation).
PROTOCOL = "protocol"


def callable_original(inner: object) -> Callable:
    """``inner`` as ``original(self, *args, **kwargs)``: itself if a plain function,
    else bound first (a wrapt wrapper called unbound would see ``instance`` None)."""
    if type(inner) is types.FunctionType:  # not isinstance: a wrapt proxy passes that
        return inner

    def original(self, *args, **kwargs):
        return inner.__get__(self, type(self))(*args, **kwargs)

    return original


class MethodHook(object):
    """Wrap ``role.name``: ``factory(original)`` returns the replacement.

    ``original(self, *args, **kwargs)`` calls what the class held before,
    bound as a wrapt-based instrumentor's wrapper there expects.
    """

    kind = "method"

    def __init__(self, role: str, name: str, factory: Callable) -> None:
        self.role = role
        self.name = name
        self.factory = factory


class CompletionHook(object):
    """Switch the fix's step on in the one wrapper of ``on_response_complete``.

    The fixes that act when a response completes (C, D, E, R3) share that wrapper
    (``fixes/completion.py``) instead of each adding a call layer: it runs on
    every response of a production server.
    """

    kind = "completion"
    role = PROTOCOL
    name = "on_response_complete"

    def __init__(self, impl: str) -> None:
        self.impl = impl


def completion_hooks(impl: str, version: Release) -> Tuple:
    """``hooks`` of a fix whose whole work is a step of ``fixes/completion.py``."""
    return (CompletionHook(impl),)


def methods_by_impl(methods: "Dict[str, Tuple[str, ...]]") -> Callable:
    """``inspects`` of a fix that depends on the same methods in every release."""

    def inspects(impl: str, version: Release) -> "Tuple[str, ...]":
        return methods[impl]

    return inspects


def protocol_methods(names: "Tuple[str, ...]", also: "Tuple[str, ...]" = ()) -> Callable:
    """``inspects`` of a fix that depends on the protocol class's methods
    ``names`` (and on ``also``, qualified names) in every release."""
    return methods_by_impl(
        {
            impl.name: tuple(impl.protocol_name + "." + name for name in names) + also
            for impl in IMPLEMENTATIONS
        }
    )


def protocol_hook(name: str, factory: Callable) -> Callable:
    """``hooks`` of a fix that wraps the protocol class's ``name`` in every release."""
    hook = (MethodHook(PROTOCOL, name, factory),)

    def hooks(impl: str, version: Release) -> Tuple:
        return hook

    return hooks


class Fix(object):
    """One fix, a backport of upstream's or one of our own.

    ``broken`` maps an implementation name to the releases that have the bug,
    ``(first broken, first fixed)`` (the range includes the first and excludes
    the second; first fixed None: no release has an upstream fix), or to
    None where the bug does not exist there; ``not_applicable`` then says why,
    and ``absent`` why releases before the first broken one cannot have it.
    ``hooks(impl, version)`` and ``inspects(impl, version)`` (the methods
    whose code must be recognised before the hooks are safe) are
    version-aware.  ``default``: selected unless the user leaves it out
    (False: only when named).
    """

    def __init__(
        self,
        id: str,
        summary: str,
        upstream: str,
        broken: "Dict[str, Optional[Tuple[str, Optional[str]]]]",
        hooks: "Callable[[str, Release], Tuple]",
        inspects: "Callable[[str, Release], Tuple[str, ...]]",
        not_applicable: "Optional[Dict[str, str]]" = None,
        default: bool = True,
        absent: "Optional[str]" = None,
    ) -> None:
        self.id = id
        self.summary = summary
        self.upstream = upstream
        self.spans = broken
        self.first_fixed = {impl: (span[1] if span else None) for impl, span in broken.items()}
        self.hooks = hooks
        self.inspects = inspects
        self.not_applicable = not_applicable or {}
        self.default = default
        self.absent = absent

    @property
    def upstream_fixed(self) -> bool:
        """False for a fix no upstream release has, on any implementation (R1-R5)."""
        return any(first_fixed is not None for first_fixed in self.first_fixed.values())

    def is_broken(self, impl: str, version: Release) -> "Optional[bool]":
        """True if ``version`` has the bug, False if not, None if never on ``impl``."""
        span = self.spans.get(impl)
        if span is None:
            return None
        first_broken, first_fixed = span
        return release(first_broken) <= version and (
            first_fixed is None or version < release(first_fixed)
        )

    def __repr__(self) -> str:
        return "<Fix {} {}>".format(self.id, self.upstream)
