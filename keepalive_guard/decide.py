"""Decide, from the installed release and its code, what each fix should do.

The version settles what it can: a bug that came in later, or whose upstream
fix the release has (also in a release newer than any this build studied:
what upstream fixed stays fixed), needs no code.  ``version_decision`` is
that part alone, so ``install()`` can say it before uvicorn's protocol
modules load.  Otherwise the code decides: every method the fix depends on
must have a fingerprint seen in a studied release that has the bug (or only
in releases that have the fix: a distro's backport), and every attribute it
hooks must exist.  Code that fails the check (a distro patch, a fork,
another patcher) is left alone and reported, naming the methods.
"""

from typing import Dict, List, Optional, Tuple

from . import patcher
from .fingerprint import function_fingerprint, studied, studied_releases
from .fixes import CATALOGUE
from .fixes.base import Fix
from .implementations import Implementation, Release, parse_version, release, uvicorn_version_text
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
        self._releases: Dict[Tuple[str, str, str], List[Release]] = {}

    def fingerprint(self, function: object) -> "Optional[str]":
        if function not in self._fingerprints:
            self._fingerprints[function] = function_fingerprint(function)
        return self._fingerprints[function]

    def releases(self, impl: str, key: str, fingerprint: str) -> "List[Release]":
        """The studied releases whose ``impl`` module ships ``key`` with this code."""
        lookup = (impl, key, fingerprint)
        if lookup not in self._releases:
            texts = studied_releases(impl, key, fingerprint)
            self._releases[lookup] = [release(text) for text in texts]
        return self._releases[lookup]


def _check_code(
    fix: Fix, impl: Implementation, classes: "Dict[str, type]", version, studied: _Studied
) -> "Tuple[str, str]":
    """(state, why): APPLIED if the code is what the fix expects, else why not."""
    by_name = {cls.__name__: cls for cls in classes.values()}
    unknown = []
    only_fixed = []
    for key in fix.inspects(impl.name, version):
        class_name, method = key.split(".")
        value = by_name[class_name].__dict__.get(method)
        if patcher.is_guard_object(value):
            return UNRECOGNISED, "{} is already patched by another copy of keepalive-guard".format(
                key
            )
        value = patcher.unwrapped(value)
        if value is None:
            unknown.append("{} (missing)".format(key))
            continue
        fingerprint = studied.fingerprint(value)
        if fingerprint is None:
            unknown.append("{} (not a Python function)".format(key))
            continue
        try:
            found = studied.releases(impl.name, key, fingerprint)
        except (OSError, UnicodeDecodeError) as exc:
            return UNRECOGNISED, "the fingerprint table cannot be read ({})".format(exc)
        if not any(fix.is_broken(impl.name, r) for r in found):
            (only_fixed if found else unknown).append("{} ({})".format(key, fingerprint))
    if unknown:
        return UNRECOGNISED, "code not recognised: {}".format(", ".join(unknown))
    if only_fixed:
        return FIXED_UPSTREAM, "the code is that of releases with the fix: {}".format(
            ", ".join(only_fixed)
        )
    for hook in fix.hooks(impl.name, version):
        cls = classes[hook.role]
        if hook.name not in cls.__dict__:
            return UNRECOGNISED, "code not recognised: {}.{} (missing)".format(
                cls.__name__, hook.name
            )
    return APPLIED, (
        "backports {}".format(fix.upstream)
        if fix.first_fixed[impl.name]
        else "no upstream fix ({})".format(fix.upstream)
    )


def version_decision(
    fix: Fix, impl: str, version_text: "Optional[str]", selection: "Tuple[str, ...]"
) -> "Optional[Tuple[str, str]]":
    """(state, why) where the selection or the version settles it, else None (code decides)."""
    if fix.id not in selection:
        return DISABLED, "not selected"
    span = fix.spans.get(impl)
    if span is None:  # structural: true of every release
        return NOT_APPLICABLE, fix.not_applicable.get(impl, "bug not present")
    if version_text is None:
        return None
    version = parse_version(version_text)
    if version is None:
        return UNRECOGNISED, "uvicorn version {!r} is not a PEP 440 version".format(version_text)
    releases = studied()
    if releases and version < release(releases[0]):
        return UNRECOGNISED, "uvicorn {} predates {}, the oldest release supported".format(
            version_text, releases[0]
        )
    first_broken, first_fixed = span
    if version < release(first_broken):
        return NOT_APPLICABLE, fix.absent or "the bug came in {}".format(first_broken)
    if first_fixed is not None and version >= release(first_fixed):
        newer = ""
        if releases and version > release(releases[-1]):
            newer = " (uvicorn {} is newer than the releases studied, {} to {})".format(
                version_text, releases[0], releases[-1]
            )
        return FIXED_UPSTREAM, "fixed upstream in {}{}".format(first_fixed, newer)
    return None


def plan(impl: Implementation, module: object, selection: "Tuple[str, ...]") -> Plan:
    """What each fix in the catalogue should do to ``module``."""
    version_text = uvicorn_version_text() or "unknown"
    version = parse_version(version_text)
    result = Plan(version_text, impl.classes(module))
    studied_code = _Studied()
    for fix in CATALOGUE.values():
        decided = version_decision(fix, impl.name, version_text, selection)
        if decided is None:
            decided = _check_code(fix, impl, result.classes, version, studied_code)
        state, reason = decided
        result.statuses.append(FixStatus(fix.id, impl.name, state, reason, fix.upstream))
        if state == APPLIED:
            result.hooks.extend((fix.id, hook) for hook in fix.hooks(impl.name, version))
    return result
