"""Decide, from the installed code, what each fix should do.

Version first: the installed uvicorn release must be one this build knows,
and the fix's release range says whether the bug is there.  Then the code
itself: every method the fix depends on must have a fingerprint seen in a
release of that range, and every attribute it hooks must be free.  Code that
fails either check (a distro patch, a fork, another patcher) is left alone
and reported as unrecognised, naming the method.
"""

from typing import Dict, List, Optional, Tuple

from . import patcher
from .fingerprint import function_fingerprint, studied_releases
from .fixes import CATALOGUE
from .fixes.base import Fix
from .implementations import (
    NEWEST_KNOWN,
    OLDEST_KNOWN,
    Implementation,
    parse_version,
    release,
    uvicorn_version_text,
)
from .report import APPLIED, DISABLED, FIXED_UPSTREAM, NOT_APPLICABLE, UNRECOGNISED, FixStatus


class Plan(object):
    """Decisions for one implementation module, and the hooks to install."""

    def __init__(self, version_text: str, classes: "Dict[str, type]") -> None:
        self.version_text = version_text
        self.classes = classes
        self.statuses: List[FixStatus] = []
        self.hooks: List[Tuple[str, object]] = []


class _Studied(object):
    """What one plan compares the installed code with, made on first use.

    Each method is fingerprinted, and each fingerprint looked up in the table,
    once however many fixes inspect it; neither outlives the plan.
    """

    def __init__(self) -> None:
        self._fingerprints: Dict[object, Optional[str]] = {}
        self._releases: Dict[Tuple[str, str, str], List[str]] = {}

    def fingerprint(self, function: object) -> "Optional[str]":
        if function not in self._fingerprints:
            self._fingerprints[function] = function_fingerprint(function)
        return self._fingerprints[function]

    def without_fix(self, fix: Fix, impl: str, key: str, fingerprint: str) -> bool:
        """Whether a studied release lacking ``fix`` ships ``key`` with this code."""
        lookup = (impl, key, fingerprint)
        if lookup not in self._releases:
            self._releases[lookup] = studied_releases(impl, key, fingerprint)
        return any(fix.is_broken(impl, release(text)) for text in self._releases[lookup])


def _check_code(
    fix: Fix, impl: Implementation, classes: "Dict[str, type]", version, studied: _Studied
) -> str:
    """Why the code is not what the fix expects, or '' if it is."""
    by_name = {cls.__name__: cls for cls in classes.values()}
    for key in fix.inspects(impl.name, version):
        class_name, method = key.split(".")
        value = patcher.unwrapped(by_name[class_name].__dict__.get(method))
        if value is None:
            return "{} is missing".format(key)
        if patcher.is_guard_object(value):
            return "{} is already patched by another copy of keepalive-guard".format(key)
        fingerprint = studied.fingerprint(value)
        if fingerprint is None:
            return "{} is not a Python function".format(key)
        try:
            known = studied.without_fix(fix, impl.name, key, fingerprint)
        except (OSError, UnicodeDecodeError) as exc:
            return "the fingerprint table cannot be read ({})".format(exc)
        if not known:
            return "{} does not match any release lacking the fix (fingerprint {})".format(
                key, fingerprint
            )
    for hook in fix.hooks(impl.name, version):
        cls = classes[hook.role]
        if hook.name not in cls.__dict__:
            return "{}.{} is missing".format(cls.__name__, hook.name)
    return ""


def plan(impl: Implementation, module: object, selection: "Tuple[str, ...]") -> Plan:
    """What each fix in the catalogue should do to ``module``."""
    version_text = uvicorn_version_text() or "unknown"
    version = parse_version(version_text)
    result = Plan(version_text, impl.classes(module))
    studied = _Studied()
    for fix in CATALOGUE.values():
        state, reason = _decide(
            fix, impl, result.classes, version, version_text, selection, studied
        )
        result.statuses.append(FixStatus(fix.id, impl.name, state, reason, fix.upstream))
        if state == APPLIED:
            result.hooks.extend((fix.id, hook) for hook in fix.hooks(impl.name, version))
    return result


def _decide(fix, impl, classes, version, version_text, selection, studied) -> "Tuple[str, str]":
    if fix.id not in selection:
        return DISABLED, "not selected"
    if fix.broken.get(impl.name) is None:  # structural: true of every release
        return NOT_APPLICABLE, fix.not_applicable.get(impl.name, "bug not present")
    if version is None:
        return UNRECOGNISED, "uvicorn version {!r} cannot be parsed".format(version_text)
    if not release(OLDEST_KNOWN) <= version <= release(NEWEST_KNOWN):
        return (
            UNRECOGNISED,
            "uvicorn {} is outside the releases this build knows ({} to {})".format(
                version_text, OLDEST_KNOWN, NEWEST_KNOWN
            ),
        )
    if version < fix.broken[impl.name][0]:
        return NOT_APPLICABLE, fix.absent or "the bug came in {}".format(fix.spans[impl.name][0])
    if not fix.is_broken(impl.name, version):
        return FIXED_UPSTREAM, "fixed upstream in {}".format(fix.first_fixed[impl.name])
    why = _check_code(fix, impl, classes, version, studied)
    if why:
        return UNRECOGNISED, why
    return APPLIED, "backports {}".format(fix.upstream)
