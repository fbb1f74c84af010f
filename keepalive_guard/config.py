"""Environment variables and the fix-selection syntax.

Selection syntax (``install(fixes=...)`` and ``KEEPALIVE_GUARD_FIXES``): a
comma- or space-separated list read left to right.  ``all`` adds every fix
on by default (all but the opt-in R4), a fix name adds it, ``-NAME``
removes it: ``all,R4`` is every fix.  A list that starts with a removal
starts from ``all``: ``-E2`` means every default fix but E2.  No selection
means ``all``.  Names are case-insensitive.  An iterable of the same
tokens works too.
"""

import os
from typing import Iterable, Optional, Tuple, Union

from .errors import KeepaliveGuardError
from .fixes import DEFAULT_FIX_IDS, FIX_IDS

ENABLE = "KEEPALIVE_GUARD"
FIXES = "KEEPALIVE_GUARD_FIXES"
STRICT = "KEEPALIVE_GUARD_STRICT"

_FALSE = ("", "0", "false", "no", "off")

Selection = Union[None, str, Iterable[str]]


def env_flag(name: str, environ: "Optional[dict]" = None) -> bool:
    """True unless the variable is unset, empty, 0, false, no or off."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() not in _FALSE


def env_disabled(name: str, environ: "Optional[dict]" = None) -> bool:
    """True only if the variable is set to 0, false, no or off."""
    value = (os.environ if environ is None else environ).get(name)
    return value is not None and value.strip().lower() in _FALSE[1:]


def parse_fixes(fixes: Selection, source: str = "fixes") -> "Tuple[str, ...]":
    """Resolve a selection to fix ids in catalogue order; reject unknown names."""
    if fixes is None:
        fixes = os.environ.get(FIXES)
        source = FIXES
        if fixes is None or not fixes.strip():
            return DEFAULT_FIX_IDS
    if isinstance(fixes, str):
        tokens = fixes.replace(",", " ").split()
    else:
        tokens = [str(token).strip() for token in fixes]
    by_name = {fix_id.upper(): fix_id for fix_id in FIX_IDS}
    chosen = set(DEFAULT_FIX_IDS) if tokens and tokens[0].startswith("-") else set()
    for token in tokens:
        remove = token.startswith("-")
        name = token[1:] if remove else token
        if name.upper() == "ALL":  # -all removes every fix, R4 too
            names = set(FIX_IDS if remove else DEFAULT_FIX_IDS)
        elif name.upper() in by_name:
            names = {by_name[name.upper()]}
        else:
            raise KeepaliveGuardError(
                "{}: unknown fix {!r}; valid names are {} and 'all' "
                "(prefix a name with '-' to leave it out)".format(source, token, ", ".join(FIX_IDS))
            )
        chosen = chosen - names if remove else chosen | names
    return tuple(fix_id for fix_id in FIX_IDS if fix_id in chosen)
