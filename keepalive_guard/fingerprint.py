"""Normalised fingerprints of uvicorn methods.

A fingerprint says "this is the code we studied" without needing the source
file: it hashes the sorted set of names a function's code refers to (globals,
attributes, imports) and the sorted set of its str/bytes constants, walking
nested code objects (comprehensions, lambdas) but not their qualnames, which
3.6-3.10 keep as constants.  Sets, not sequences, because bytecode order
changes between CPython releases (3.12 inlines comprehensions and moves
exception handlers to the end).  The docstring is dropped so ``python -OO``
gives the same answer; ``AssertionError`` is dropped because CPython 3.6-3.8
load it by name and 3.9+ do not.  The result is identical on CPython 3.6 to
3.13 for the same source (``compat/fingerprints.py generate`` checks that).

The fingerprints of every studied release are a generated text file,
``fingerprints.txt``, read line by line while deciding: imported as a module,
the table stayed in every server process (about 70 kB of RSS), and read whole
(20 kB, as bytes and then as text) it added about 20 kB of RSS to install().
"""

import io
import os
import sys
import types
from typing import Callable, List, Optional, Set

TABLE = "fingerprints.txt"

_VOLATILE_NAMES = frozenset(("AssertionError",))


def _collect(code: types.CodeType, skip_docstring: bool, names: set, strings: set) -> None:
    """Add the names ``code`` refers to and its str/bytes constants, nested code too."""
    names.update(code.co_names)
    consts = code.co_consts[1:] if skip_docstring else code.co_consts
    # CPython 3.6-3.10 also store each nested function's qualname as a str
    # constant ("C.m.<locals>.<listcomp>"); 3.11+ keep it in co_qualname.
    nested = set(c.co_name for c in consts if isinstance(c, types.CodeType))
    stack = [c for c in consts if not (nested and isinstance(c, str) and _is_qualname(c, nested))]
    while stack:
        const = stack.pop()
        if isinstance(const, (str, bytes)):
            strings.add(const)
        elif isinstance(const, types.CodeType):
            # Nested code here is comprehensions and lambdas: no docstrings.
            _collect(const, False, names, strings)
        elif isinstance(const, (tuple, frozenset)):
            stack.extend(const)


def _is_qualname(text: str, nested: set) -> bool:
    head, sep, tail = text.rpartition(".<locals>.")
    return bool(sep) and tail in nested


def code_fingerprint(code: types.CodeType, has_docstring: bool) -> str:
    """Fingerprint of a code object; ``has_docstring`` drops ``co_consts[0]``."""
    names: Set[str] = set()
    strings: Set[str] = set()
    _collect(code, has_docstring, names, strings)
    # The hash is of repr(sorted(items, key=repr)), written so that each
    # item's repr is made once.
    items = [repr(("n", name)) for name in names if name not in _VOLATILE_NAMES]
    items.extend(repr(("s", text)) for text in strings)
    items.sort()
    text = "[" + ", ".join(items) + "]"
    return _sha512()(text.encode("utf-8")).hexdigest()[:16]


def _sha512() -> Callable:
    """SHA-512 from a module this process has already loaded, if any.

    ``random`` loads one at start-up on CPython 3.6-3.12 (hashlib, _sha512 or
    _sha2), and uvicorn imports ``random``: loading a second hash module
    would cost every server about 28 kB of RSS, and hashlib (OpenSSL) ~2 ms.
    """
    for name in ("_sha2", "_sha512", "hashlib"):
        sha512 = getattr(sys.modules.get(name), "sha512", None)
        if sha512 is not None:
            return sha512
    try:
        if sys.version_info >= (3, 12):
            from _sha2 import sha512
        else:
            from _sha512 import sha512
    except ImportError:  # a build without them
        from hashlib import sha512
    return sha512


def function_fingerprint(function: object) -> "Optional[str]":
    """Fingerprint of a plain or async function, or None if it is not one."""
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    return code_fingerprint(code, getattr(function, "__doc__", None) is not None)


def studied_releases(impl: str, key: str, fingerprint: str) -> "List[str]":
    """The releases whose ``impl`` module ships ``key`` with this fingerprint.

    A table line reads ``<impl> <Class.method> <fingerprint> <release> ...``.
    """
    prefix = "{} {} {} ".format(impl, key, fingerprint).encode("ascii")
    with open_table() as table:
        for line in table:
            if line.startswith(prefix):
                return line.decode("ascii").split()[3:]
    return []


_studied: "List[str]" = []


def studied() -> "List[str]":
    """Every release the table was generated from, oldest first (its ``releases`` line).

    The last is the newest release this build has studied: adding a release
    to the table is all it takes to move it.
    """
    if not _studied:
        with open_table() as table:
            for line in table:
                if line.startswith(b"releases "):
                    _studied[:] = line.decode("ascii").split()[1:]
                    break
    return _studied


def open_table() -> "io.BufferedIOBase":
    """The generated table as a binary file; from a zip, the loader reads it."""
    path = os.path.join(os.path.dirname(__file__), TABLE)
    try:
        return open(path, "rb")
    except OSError:
        return io.BytesIO(__spec__.loader.get_data(path))
