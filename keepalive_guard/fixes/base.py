"""What a fix is: where it hooks into uvicorn and which releases need it.

A fix never replaces a whole uvicorn method.  It adds a small piece of
behaviour at one of the hook points that have not moved since 0.2.21
(see ``docs`` in the README): before or after a protocol method, or when the
protocol assigns ``self.cycle``.  The patcher composes the hooks of all
selected fixes into one replacement per attribute.
"""

from typing import Callable, Dict, Optional, Tuple

from ..implementations import Release, release

# Roles of the classes a hook can target (see implementations.Implementation).
PROTOCOL = "protocol"
CYCLE = "cycle"


class MethodHook(object):
    """Wrap ``role.name``: ``factory(original)`` returns the replacement."""

    kind = "method"

    def __init__(self, role: str, name: str, factory: Callable) -> None:
        self.role = role
        self.name = name
        self.factory = factory


class AssignHook(object):
    """Call ``callback(instance, value)`` whenever ``role.name`` is assigned.

    Installed as a set-only data descriptor: reads stay plain instance-dict
    look-ups, so the hot path pays only on assignment.
    """

    kind = "assign"

    def __init__(self, role: str, name: str, callback: Callable) -> None:
        self.role = role
        self.name = name
        self.callback = callback


class Fix(object):
    """One backported upstream fix.

    ``broken`` maps an implementation name to the releases that lack the fix,
    ``(first broken, first fixed)`` (the range includes the first and excludes
    the second), or to None where the bug does not exist there;
    ``not_applicable`` then says why.  ``hooks(impl, version)`` and
    ``inspects(impl, version)`` (the methods whose code must be recognised
    before the hooks are safe) are version-aware.
    """

    def __init__(
        self,
        id: str,
        summary: str,
        upstream: str,
        broken: Dict[str, Optional[Tuple[str, str]]],
        hooks: Callable[[str, Release], Tuple],
        inspects: Callable[[str, Release], Tuple[str, ...]],
        not_applicable: Optional[Dict[str, str]] = None,
    ) -> None:
        self.id = id
        self.summary = summary
        self.upstream = upstream
        self.first_fixed = {impl: (span[1] if span else None) for impl, span in broken.items()}
        self.broken = {
            impl: ((release(span[0]), release(span[1])) if span else None)
            for impl, span in broken.items()
        }
        self.hooks = hooks
        self.inspects = inspects
        self.not_applicable = not_applicable or {}

    def is_broken(self, impl: str, version: Release) -> Optional[bool]:
        """True if ``version`` lacks the fix, False if it has it, None if n/a."""
        span = self.broken.get(impl)
        if span is None:
            return None
        return span[0] <= version < span[1]

    def __repr__(self) -> str:
        return "<Fix {} {}>".format(self.id, self.upstream)
