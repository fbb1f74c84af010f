"""What a fix is: where it hooks into uvicorn and which releases need it.

A fix never replaces a whole uvicorn method.  It adds a small piece of
behaviour before or after a protocol method at one of the hook points that
have not moved since 0.2.21: ``on_response_complete`` (every fix that acts
when a response completes, through one shared wrapper, where E also stands
in for the original when a buffered request can start) and the h11 upgrade
method.  The patcher builds one replacement per method.
"""

from typing import Callable, Dict, Optional, Tuple

from ..implementations import Release, release

# The role of the class every hook targets (see implementations.Implementation).
PROTOCOL = "protocol"


class MethodHook(object):
    """Wrap ``role.name``: ``factory(original)`` returns the replacement."""

    kind = "method"

    def __init__(self, role: str, name: str, factory: Callable) -> None:
        self.role = role
        self.name = name
        self.factory = factory


class CompletionHook(object):
    """Switch the fix's step on in the one wrapper of ``on_response_complete``.

    The fixes that act when a response completes (C, D, E) share that wrapper
    (``fixes/completion.py``) instead of each adding a call layer: it runs on
    every response of a production server.
    """

    kind = "completion"
    role = PROTOCOL
    name = "on_response_complete"

    def __init__(self, impl: str) -> None:
        self.impl = impl


class Fix(object):
    """One fix: an upstream fix backported, or a race upstream never fixed.

    ``broken`` maps an implementation name to the releases that lack the fix,
    ``(first broken, first fixed)`` (the range includes the first and excludes
    the second), or to None where the bug does not exist there;
    ``not_applicable`` then says why.  A first fixed of None is an open
    range: no upstream release has the fix (R1-R5), so every release from the
    first broken on lacks it, newer ones too as long as their code matches.
    ``hooks(impl, version)`` and ``inspects(impl, version)`` (the methods
    whose code must be recognised before the hooks are safe) are
    version-aware.  ``default`` False: only an explicit selection turns the
    fix on (``all`` does not).
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
    ) -> None:
        self.id = id
        self.summary = summary
        self.upstream = upstream
        self.first_fixed = {impl: (span[1] if span else None) for impl, span in broken.items()}
        self.first_broken = {impl: (span[0] if span else None) for impl, span in broken.items()}
        self.broken = {
            impl: ((release(span[0]), release(span[1]) if span[1] else None) if span else None)
            for impl, span in broken.items()
        }
        self.hooks = hooks
        self.inspects = inspects
        self.not_applicable = not_applicable or {}
        self.default = default

    @property
    def upstream_fixed(self) -> bool:
        """False for a fix no upstream release has, on any implementation."""
        return any(span is not None and span[1] is not None for span in self.broken.values())

    def is_broken(self, impl: str, version: Release) -> "Optional[bool]":
        """True if ``version`` lacks the fix, False if it has it, None if n/a."""
        span = self.broken.get(impl)
        if span is None:
            return None
        return span[0] <= version and (span[1] is None or version < span[1])

    def absent_reason(self, impl: str, version: Release) -> str:
        """Why ``version`` (with ``is_broken`` False) needs no fix: fixed, or not yet broken."""
        first_broken, first_fixed = self.broken[impl]
        if version < first_broken:
            return "bug not present before {}".format(self.first_broken[impl])
        return "fixed upstream in {}".format(self.first_fixed[impl])

    def applied_reason(self) -> str:
        """How status words an applied fix: a backport, or a fix upstream lacks."""
        if self.upstream_fixed:
            return "backports {}".format(self.upstream)
        return "no upstream fix ({})".format(self.upstream)

    def __repr__(self) -> str:
        return "<Fix {} {}>".format(self.id, self.upstream)
