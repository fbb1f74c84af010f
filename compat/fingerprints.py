"""Build keepalive_guard/fingerprints.txt from uvicorn's released wheels.

Two modes:

``python compat/fingerprints.py compute --wheels DIR --out FILE.json``
    With the running interpreter, fingerprint the methods listed in METHODS
    for every ``uvicorn-*.whl`` in DIR.  Nothing is imported from uvicorn:
    the source of each ``*_impl.py`` is compiled with ``compile()``, the class
    body code object is found in the module's ``co_consts`` and the method's
    code object in the class body's ``co_consts`` (both by ``co_name``);
    whether the method has a docstring is read from the AST.  Releases whose
    source does not compile here (SyntaxError) are skipped with a note.
    Output: ``{release: {"h11": {key: fp or null}, "httptools": {...}},
    "_python": "3.x.y", "_skipped": {release: reason}}``.

``python compat/fingerprints.py generate --wheels DIR``
    Download missing wheels (uvicorn 0.11.0 to 0.55.0, without the yanked
    0.17.0) into DIR, run ``compute`` under every CPython 3.6-3.13 found,
    check that all interpreters that compiled a release agree, and write
    keepalive_guard/fingerprints.txt.  Interpreters: the environment variable
    KEEPALIVE_GUARD_PYTHONS (os.pathsep-separated paths) if set; otherwise
    ``python3.X`` on PATH and ``$(pyenv root)/versions/*/bin/python``, one per
    minor version.  Needs ``packaging`` (run it on a recent Python).

This file must stay importable and runnable on Python 3.6: ``compute`` runs
under every interpreter.
"""

import argparse
import ast
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FINGERPRINT_PY = os.path.join(ROOT, "keepalive_guard", "fingerprint.py")
OUTPUT = os.path.join(ROOT, "keepalive_guard", "fingerprints.txt")

FIRST_RELEASE = "0.11.0"
LAST_RELEASE = "0.55.0"
EXCLUDED_RELEASES = ("0.17.0",)  # yanked
MINORS = tuple(range(6, 14))  # CPython 3.6 .. 3.13

IMPLS = (
    ("h11", "uvicorn/protocols/http/h11_impl.py"),
    ("httptools", "uvicorn/protocols/http/httptools_impl.py"),
)

METHODS = {
    "h11": (
        "H11Protocol.on_response_complete",
        "H11Protocol.handle_events",
        "H11Protocol.connection_lost",
        "H11Protocol.data_received",
        "H11Protocol.handle_upgrade",
        "H11Protocol.handle_websocket_upgrade",
        "H11Protocol.timeout_keep_alive_handler",
        "H11Protocol.connection_made",
        "RequestResponseCycle.run_asgi",
        "RequestResponseCycle.__init__",
        "RequestResponseCycle.send",
        "RequestResponseCycle.receive",
    ),
    "httptools": (
        "HttpToolsProtocol.on_response_complete",
        "HttpToolsProtocol.on_headers_complete",
        "HttpToolsProtocol.on_body",
        "HttpToolsProtocol.on_message_complete",
        "HttpToolsProtocol.connection_lost",
        "HttpToolsProtocol.data_received",
        "HttpToolsProtocol.timeout_keep_alive_handler",
        "HttpToolsProtocol.connection_made",
        "HttpToolsProtocol.handle_upgrade",
        "HttpToolsProtocol.handle_websocket_upgrade",
        "RequestResponseCycle.run_asgi",
        "RequestResponseCycle.__init__",
        "RequestResponseCycle.send",
        "RequestResponseCycle.receive",
    ),
}

_WHEEL_RE = re.compile(r"^uvicorn-([^-]+)-.*\.whl$")


def _note(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _load_code_fingerprint():
    # Load the file directly: importing the keepalive_guard package would run
    # its __init__ (which may import things this interpreter cannot).
    spec = importlib.util.spec_from_file_location("_kg_fingerprint", FINGERPRINT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.code_fingerprint


def _simple_version_key(version):
    # Enough for uvicorn's N.N.N[.postN] (compute mode has no `packaging`).
    parts = []
    for part in version.split("."):
        match = re.match(r"^(post)?(\d+)$", part)
        if match is None:
            return (version,)
        parts.append((1 if match.group(1) else 0, int(match.group(2))))
    return tuple(parts)


def wheels_in(directory):
    """{release: wheel path} for the uvicorn wheels in ``directory``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "uvicorn-*.whl"))):
        match = _WHEEL_RE.match(os.path.basename(path))
        if match is not None:
            found[match.group(1)] = path
    return found


# --------------------------------------------------------------------- compute


def _single(items, what):
    if len(items) > 1:
        raise ValueError("{} defined {} times".format(what, len(items)))
    return items[0] if items else None


def _class_methods_ast(tree, class_name):
    """{method name: has_docstring} of the class defined at module level."""
    classes = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name
    ]
    node = _single(classes, "class " + class_name)
    if node is None:
        return None
    methods = {}
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if item.name in methods:
                raise ValueError("{}.{} defined twice".format(class_name, item.name))
            doc = ast.get_docstring(item, clean=False)
            methods[item.name] = doc is not None
    return methods


def _code_consts_named(code, name):
    return [
        const for const in code.co_consts if hasattr(const, "co_name") and const.co_name == name
    ]


def fingerprint_source(source, filename, keys, code_fingerprint):
    """{key: fingerprint or None} for the "Class.method" keys in ``source``.

    Raises SyntaxError if this interpreter cannot compile ``source``.
    """
    module_code = compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename)
    result = {}
    for key in keys:
        class_name, method_name = key.split(".", 1)
        methods = _class_methods_ast(tree, class_name)
        class_code = _single(_code_consts_named(module_code, class_name), "class " + class_name)
        if (methods is None) != (class_code is None):
            raise ValueError("AST and bytecode disagree on " + class_name)
        if methods is None or method_name not in methods:
            result[key] = None
            continue
        method_code = _single(_code_consts_named(class_code, method_name), key)
        if method_code is None:
            raise ValueError("no code object for " + key)
        result[key] = code_fingerprint(method_code, methods[method_name])
    return result


def _wheel_metadata(archive):
    for name in archive.namelist():
        if name.endswith(".dist-info/METADATA"):
            return archive.read(name).decode("utf-8", "replace")
    return ""


def compute(wheels_dir, out_path):
    code_fingerprint = _load_code_fingerprint()
    python = "{}.{}.{}".format(*sys.version_info[:3])
    output = {"_python": python, "_skipped": {}}
    wheels = wheels_in(wheels_dir)
    if not wheels:
        _note("no uvicorn wheels in {}".format(wheels_dir))
        return 1
    for release in sorted(wheels, key=_simple_version_key):
        with zipfile.ZipFile(wheels[release]) as archive:
            sources = dict((impl, archive.read(member)) for impl, member in IMPLS)
        entry = {}
        try:
            for impl, member in IMPLS:
                entry[impl] = fingerprint_source(
                    sources[impl], member, METHODS[impl], code_fingerprint
                )
        except SyntaxError as exc:
            reason = "SyntaxError: {} ({}, line {})".format(
                exc.msg, os.path.basename(exc.filename or "?"), exc.lineno
            )
            _note("python {}: skipping uvicorn {}: {}".format(python, release, reason))
            output["_skipped"][release] = reason
            continue
        output[release] = entry
    with open(out_path, "w") as handle:
        json.dump(output, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return 0


# -------------------------------------------------------------------- generate


def _run(command):
    # generate mode only (runs on a recent Python).
    return subprocess.run(command, capture_output=True, text=True)


def list_releases():
    from packaging.version import Version

    proc = _run([sys.executable, "-m", "pip", "index", "versions", "uvicorn"])
    if proc.returncode != 0:
        raise SystemExit("pip index versions uvicorn failed:\n" + proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            names = line.split(":", 1)[1].split(",")
            break
    else:
        raise SystemExit("cannot parse pip index output:\n" + proc.stdout)
    low, high = Version(FIRST_RELEASE), Version(LAST_RELEASE)
    excluded = set(Version(v) for v in EXCLUDED_RELEASES)
    releases = []
    for name in names:
        version = Version(name.strip())
        if version.is_prerelease or version in excluded:
            continue
        if low <= version <= high:
            releases.append(str(version))
    return sorted(releases, key=Version)


def ensure_wheels(releases, wheels_dir):
    from packaging.version import Version

    os.makedirs(wheels_dir, exist_ok=True)
    have = set(Version(v) for v in wheels_in(wheels_dir))
    for release in releases:
        if Version(release) in have:
            continue
        _note("downloading uvicorn=={}".format(release))
        proc = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                wheels_dir,
                "uvicorn=={}".format(release),
            ]
        )
        if proc.returncode != 0:
            raise SystemExit(
                "pip download uvicorn=={} failed:\n{}{}".format(release, proc.stdout, proc.stderr)
            )
    wheels = dict((str(Version(v)), p) for v, p in wheels_in(wheels_dir).items())
    missing = [r for r in releases if r not in wheels]
    if missing:
        raise SystemExit("no wheel for: " + ", ".join(missing))
    return dict((r, wheels[r]) for r in releases)


_PROBE = "import sys; print(sys.implementation.name, '.'.join(map(str, sys.version_info[:3])))"


def _probe(path):
    """(minor, "3.x.y") if ``path`` runs CPython 3.6..3.13, else None."""
    try:
        proc = _run([path, "-c", _PROBE])
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    words = proc.stdout.split()
    if len(words) != 2 or words[0] != "cpython":
        return None
    parts = words[1].split(".")
    if parts[0] != "3" or int(parts[1]) not in MINORS:
        return None
    return int(parts[1]), words[1]


def _pyenv_root():
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    proc = _run([pyenv, "root"])
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return proc.stdout.strip()


def discover_interpreters():
    """[(minor, "3.x.y", path)], one per minor version, sorted by minor."""
    override = os.environ.get("KEEPALIVE_GUARD_PYTHONS")
    if override:
        candidates = [p for p in override.split(os.pathsep) if p]
        source = "KEEPALIVE_GUARD_PYTHONS"
    else:
        candidates = []
        for minor in MINORS:
            path = shutil.which("python3.{}".format(minor))
            if path is not None:
                candidates.append(path)
        root = _pyenv_root()
        if root is not None:
            pattern = os.path.join(root, "versions", "*", "bin", "python")
            candidates.extend(sorted(glob.glob(pattern)))
        source = "PATH and pyenv"
    chosen = {}
    for path in candidates:
        probe = _probe(path)
        if probe is None:
            if override:
                raise SystemExit("KEEPALIVE_GUARD_PYTHONS: {} is not CPython 3.6-3.13".format(path))
            continue
        minor, version = probe
        if minor in chosen:
            if override:
                _note("ignoring {} ({}): already have 3.{}".format(path, version, minor))
            continue
        chosen[minor] = (minor, version, path)
    missing = ["3.{}".format(m) for m in MINORS if m not in chosen]
    if missing:
        _note("WARNING: no interpreter found ({}) for {}".format(source, ", ".join(missing)))
    return [chosen[m] for m in sorted(chosen)]


def _claimed_minors(archive_path):
    """Python 3 minors the wheel says it supports (None: cannot tell)."""
    from packaging.specifiers import SpecifierSet

    with zipfile.ZipFile(archive_path) as archive:
        metadata = _wheel_metadata(archive)
    requires = None
    classified = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Python:"):
            requires = line.split(":", 1)[1].strip()
        match = re.match(r"^Classifier: Programming Language :: Python :: 3\.(\d+)\s*$", line)
        if match:
            classified.append(int(match.group(1)))
    if requires:
        spec = SpecifierSet(requires)
        return set(m for m in MINORS if "3.{}.0".format(m) in spec)
    if classified:  # no Requires-Python: lowest classifier onwards
        return set(m for m in MINORS if m >= min(classified))
    return None


def render_table(known, releases, interpreters):
    """The text of keepalive_guard/fingerprints.txt (read by keepalive_guard.fingerprint)."""
    versions = ", ".join(v for _, v, _ in interpreters)
    out = [
        "# Generated by `python compat/fingerprints.py generate`. Do not edit by hand.",
        "#",
        "# <impl> <Class.method> <fingerprint> <release> ...: the releases (PEP 440 order)",
        "# whose uvicorn/protocols/http/<impl>_impl.py ships exactly that code; fingerprint",
        '# "-": the release does not define that method on that class.',
        "# Fingerprint: keepalive_guard.fingerprint.code_fingerprint of the method compiled",
        "# from the wheel's source.  Every one of these interpreters that compiles a release",
        "# gave the same fingerprints for it: CPython " + versions + ".",
        "releases " + " ".join(releases),
    ]
    for impl, _ in IMPLS:
        for key in METHODS[impl]:
            for fp, fp_releases in known[impl][key]:
                out.append(" ".join([impl, key, fp or "-"] + list(fp_releases)))
    return "\n".join(out) + "\n"


def generate(wheels_dir):
    try:
        from packaging.version import Version
    except ImportError:
        raise SystemExit("generate needs `packaging`: run it on a newer Python") from None

    releases = list_releases()
    _note("{} releases: {} .. {}".format(len(releases), releases[0], releases[-1]))
    wheels = ensure_wheels(releases, wheels_dir)
    interpreters = discover_interpreters()
    if not interpreters:
        raise SystemExit("no interpreters found")

    results = {}  # python version -> compute output
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        # Only the wanted releases, even if DIR holds others.
        wanted_dir = os.path.join(scratch, "wheels")
        os.mkdir(wanted_dir)
        for path in wheels.values():
            os.symlink(os.path.abspath(path), os.path.join(wanted_dir, os.path.basename(path)))
        for minor, version, path in interpreters:
            out_path = os.path.join(scratch, "3.{}.json".format(minor))
            _note("computing with CPython {} ({})".format(version, path))
            proc = subprocess.run(
                [
                    path,
                    os.path.abspath(__file__),
                    "compute",
                    "--wheels",
                    wanted_dir,
                    "--out",
                    out_path,
                ]
            )
            if proc.returncode != 0:
                _note("ERROR: compute failed under {}".format(path))
                failed = True
                continue
            with open(out_path) as handle:
                results[version] = json.load(handle)
    if failed:
        raise SystemExit(1)

    # Compare: every interpreter that compiled a release must agree.
    merged = {}
    disagreements = []
    unexpected = []
    for release in releases:
        by_python = dict(
            (v, results[v][release]) for _, v, _ in interpreters if release in results[v]
        )
        if not by_python:
            disagreements.append("{}: compiled by no interpreter".format(release))
            continue
        claimed = _claimed_minors(wheels[release])
        for minor, version, _ in interpreters:
            if release in results[version]:
                continue
            reason = results[version]["_skipped"].get(release, "?")
            if claimed is not None and minor in claimed:
                unexpected.append("uvicorn {} on CPython {}: {}".format(release, version, reason))
        order = [v for _, v, _ in interpreters if v in by_python]
        reference_python = order[0]
        reference = by_python[reference_python]
        for version in order:
            entry = by_python[version]
            for impl, _ in IMPLS:
                for key in METHODS[impl]:
                    if entry[impl][key] != reference[impl][key]:
                        disagreements.append(
                            "uvicorn {} {} {}: {} on {} but {} on {}".format(
                                release,
                                impl,
                                key,
                                reference[impl][key],
                                reference_python,
                                entry[impl][key],
                                version,
                            )
                        )
        merged[release] = reference

    _note("")
    _note(
        "compiled by: "
        + "; ".join(
            "{}: {}/{}".format(v, len([r for r in releases if r in results[v]]), len(releases))
            for _, v, _ in interpreters
        )
    )
    if unexpected:
        _note("")
        _note("Releases that do not compile on a Python they claim to support:")
        for line in unexpected:
            _note("  " + line)
    if disagreements:
        _note("")
        _note("!" * 72)
        _note(
            "INTERPRETERS DISAGREE: {} problem(s); {} not written".format(
                len(disagreements), OUTPUT
            )
        )
        for line in disagreements:
            _note("  " + line)
        _note("!" * 72)
        raise SystemExit(1)

    known = {}
    for impl, _ in IMPLS:
        known[impl] = {}
        for key in METHODS[impl]:
            groups = {}
            order = []
            for release in releases:  # PEP 440 order
                fp = merged[release][impl][key]
                if fp not in groups:
                    groups[fp] = []
                    order.append(fp)
                groups[fp].append(release)
            known[impl][key] = [(fp, sorted(groups[fp], key=Version)) for fp in order]

    with open(OUTPUT, "w") as handle:
        handle.write(render_table(known, releases, interpreters))
    _note("")
    _note("all {} interpreters agreed; wrote {}".format(len(interpreters), OUTPUT))
    for impl, _ in IMPLS:
        for key in METHODS[impl]:
            groups = known[impl][key]
            _note(
                "  {:10} {:40} {} fingerprint(s){}".format(
                    impl,
                    key,
                    len([fp for fp, _ in groups if fp is not None]),
                    " + absent" if any(fp is None for fp, _ in groups) else "",
                )
            )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    p_compute = commands.add_parser("compute", help="fingerprint with this Python")
    p_compute.add_argument("--wheels", required=True)
    p_compute.add_argument("--out", required=True)
    p_generate = commands.add_parser("generate", help="write keepalive_guard/fingerprints.txt")
    p_generate.add_argument("--wheels", required=True)
    args = parser.parse_args(argv)
    if args.command == "compute":
        return compute(args.wheels, args.out)
    if args.command == "generate":
        return generate(args.wheels)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
