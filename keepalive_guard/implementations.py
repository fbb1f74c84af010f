"""Where uvicorn keeps the classes we patch, and which release is installed.

Both names have been stable since 0.2.17: ``uvicorn.protocols.http.h11_impl``
and ``httptools_impl``, each with a protocol class and its own
``RequestResponseCycle``.  Nothing here imports uvicorn unless asked to.
"""

import importlib
import sys
from typing import Dict, Optional, Tuple

#: A release as an orderable key: (major, minor, micro, post), post -1 if none.
Release = Tuple[int, int, int, int]

_DIGITS = frozenset("0123456789")
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.")

H11 = "h11"
HTTPTOOLS = "httptools"

#: The releases this build of keepalive-guard has studied (inclusive).
OLDEST_KNOWN = "0.11.0"
NEWEST_KNOWN = "0.55.0"


class Implementation(object):
    """One of uvicorn's HTTP/1.1 implementations."""

    def __init__(self, name: str, module: str, protocol: str, library: str) -> None:
        self.name = name
        self.module = module
        self.protocol_name = protocol
        self.cycle_name = "RequestResponseCycle"
        self.library = library

    def loaded_module(self) -> "Optional[object]":
        """The module if it has finished importing, else None (never imports)."""
        module = sys.modules.get(self.module)
        if module is None or not hasattr(module, self.cycle_name):
            return None
        return module

    def import_module(self) -> "Tuple[Optional[object], Optional[str]]":
        """Import the module; return (module, None) or (None, why it failed)."""
        try:
            return importlib.import_module(self.module), None
        except ImportError as exc:
            return None, "{} cannot be imported ({})".format(self.module, exc)

    def classes(self, module: object) -> "Dict[str, type]":
        """The patched classes by role, ``protocol`` and ``cycle``."""
        return {
            "protocol": getattr(module, self.protocol_name),
            "cycle": getattr(module, self.cycle_name),
        }


IMPLEMENTATIONS = (
    Implementation(H11, "uvicorn.protocols.http.h11_impl", "H11Protocol", "h11"),
    Implementation(
        HTTPTOOLS, "uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol", "httptools"
    ),
)


def distribution_version(module_name: str) -> "Optional[str]":
    """The version of an importable module, or None if it cannot be imported.

    ``__version__`` first (uvicorn, h11 and httptools carry it, and it avoids
    a slow scan of installed distributions), then the distribution metadata
    where importlib.metadata exists (3.8+), else ``"unknown"``: httptools
    0.0.13, which uvicorn 0.11 pins on Python 3.6, has no ``__version__``.
    """
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    version = getattr(module, "__version__", None)
    if version is not None:
        return str(version)
    try:
        from importlib.metadata import version as metadata_version  # Python 3.8+

        return metadata_version(module_name)
    except Exception:  # no importlib.metadata (3.6, 3.7) or no metadata found
        return "unknown"


def parse_version(text: "Optional[str]") -> "Optional[Release]":
    """``"0.27.0.post1"`` -> ``(0, 27, 0, 1)``; None for anything else.

    The PEP 440 subset uvicorn has used since 0.2: N.N[.N][.postN], a local
    label (``+el8``) ignored.  Pre-releases and dev builds are None: the guard
    has not studied them.  packaging would do this too, but importing it
    costs more than the whole activation budget (see the benchmarks), and so
    does compiling a regular expression on Python 3.6.
    """
    text = (text or "").strip().lower()
    text, plus, local = text[1:] if text.startswith("v") else text, "", ""
    if "+" in text:
        text, plus, local = text.partition("+")
        if not local or not _LOCAL.issuperset(local):
            return None
    parts = text.split(".")
    post = -1
    if len(parts) > 2 and parts[-1].startswith("post"):
        number = parts.pop()[4:]
        if not _is_number(number):
            return None
        post = int(number)
    if not 2 <= len(parts) <= 3 or not all(_is_number(part) for part in parts):
        return None
    return (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0, post)


def _is_number(text: str) -> bool:
    return bool(text) and _DIGITS.issuperset(text)


def release(text: str) -> Release:
    """parse_version for the literal releases written in this package."""
    parsed = parse_version(text)
    if parsed is None:
        raise ValueError("not a release: {!r}".format(text))
    return parsed
