"""What the guard decided, per fix and implementation, as data, text and log lines."""

import logging
from typing import Dict, List, Optional

from . import serverlog

APPLIED = "applied"
FIXED_UPSTREAM = "fixed upstream"
NOT_APPLICABLE = "not applicable"
UNRECOGNISED = "unrecognised"
DISABLED = "disabled"
PENDING = "pending"

STATES = (APPLIED, FIXED_UPSTREAM, NOT_APPLICABLE, UNRECOGNISED, DISABLED, PENDING)

logger = logging.getLogger("keepalive_guard")
serverlog.attach(logger)  # into a uvicorn server's own log (see serverlog)


class FixStatus(object):
    """The decision for one fix on one implementation."""

    __slots__ = ("fix", "implementation", "state", "reason", "upstream")

    def __init__(
        self, fix: str, implementation: str, state: str, reason: str, upstream: str
    ) -> None:
        self.fix = fix
        self.implementation = implementation
        self.state = state
        self.reason = reason
        self.upstream = upstream

    def as_dict(self) -> "Dict[str, str]":
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "<FixStatus {} {}: {} ({})>".format(
            self.fix, self.implementation, self.state, self.reason
        )


class Report(object):
    """The guard's state: versions found and one FixStatus per fix and implementation."""

    def __init__(
        self,
        installed: bool,
        strict: bool,
        selected: "List[str]",
        versions: "Dict[str, Optional[str]]",
        fixes: "List[FixStatus]",
    ) -> None:
        self.installed = installed
        self.strict = strict
        self.selected = list(selected)
        self.versions = versions
        self.fixes = fixes

    def by_state(self, state: str) -> "List[FixStatus]":
        return [status for status in self.fixes if status.state == state]

    @property
    def applied(self) -> "List[FixStatus]":
        return self.by_state(APPLIED)

    @property
    def problems(self) -> "List[FixStatus]":
        """Fixes that apply (or may apply) here but are not in force."""
        return [s for s in self.fixes if s.state in (UNRECOGNISED, PENDING)]

    def get(self, fix: str, implementation: str) -> "Optional[FixStatus]":
        for status in self.fixes:
            if status.fix == fix and status.implementation == implementation:
                return status
        return None

    def as_dict(self) -> "Dict[str, object]":
        return {
            "installed": self.installed,
            "strict": self.strict,
            "selected": self.selected,
            "versions": dict(self.versions),
            "fixes": [status.as_dict() for status in self.fixes],
        }

    def format(self) -> str:
        lines = [
            "keepalive-guard in this process: {}{}".format(
                "installed" if self.installed else "not installed",
                " (strict)" if self.strict else "",
            ),
            "versions: "
            + ", ".join("{} {}".format(k, v or "not imported") for k, v in self.versions.items()),
        ]
        rows = [("fix", "impl", "state", "detail")] + [
            (s.fix, s.implementation, s.state, s.reason) for s in self.fixes
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            lines.append(
                "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            )
        return "\n".join(lines)

    __str__ = format


def log_decision(subject: str, statuses: "List[FixStatus]") -> None:
    """Log one decision (a uvicorn module patched, or a guarded class built).

    One WARNING naming the fixes not applied to unrecognised code and why
    (fixes with the same reason together), then one line with every fix's
    state, at INFO only if a fix was applied: what the guard leaves as it
    was adds nothing to the server's INFO log, whose records tests and log
    pipelines count.
    """
    groups: Dict[str, List[str]] = {}
    unrecognised: Dict[str, List[str]] = {}
    for s in statuses:
        groups.setdefault(s.state, []).append(s.fix)
        if s.state == UNRECOGNISED:
            unrecognised.setdefault(s.reason, []).append(s.fix)
    if unrecognised:
        logger.warning(
            "keepalive-guard: %s: not applied: %s",
            subject,
            "; ".join("{}: {}".format(", ".join(ids), why) for why, ids in unrecognised.items()),
        )
    logger.log(
        logging.INFO if APPLIED in groups else logging.DEBUG,
        "keepalive-guard: %s: %s",
        subject,
        "; ".join("{} {}".format(state, ", ".join(ids)) for state, ids in groups.items()),
    )
