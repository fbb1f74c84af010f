"""Build keepalive_guard/fingerprints.txt from uvicorn's published releases.

The table fingerprints every function (plain or async, ``__init__`` and
decorated ones included) defined in the body of the protocol class
(``H11Protocol``, ``HttpToolsProtocol``) and of ``RequestResponseCycle`` in
each implementation module, for every uvicorn release on the package index
from 0.2.0 to the newest studied one: pre-releases included, yanked releases
(0.17.0) left out.  The module is ``uvicorn/protocols/http/h11.py`` /
``httptools.py`` up to 0.2.16 and ``h11_impl.py`` / ``httptools_impl.py``
from 0.2.17; the class names are the same in every release (a release
without one of them stops the build: its code needs a look first).
Releases without a wheel (everything before 0.10.9) are read from the sdist.

Adding a new uvicorn release (maintainers), in one step::

    python3 compat/fingerprints.py add-release 0.56.0

downloads that release (checked against the index's sha256), fingerprints
it under every CPython 3.6-3.13 found, checks they agree, adds it to the
table (the releases already in the table are taken from it, not recomputed),
prints which methods changed since the previous newest release (the fixes
that inspect those will say "unrecognised" until someone reads the new code),
and runs that release's matrix cells (``compat/matrix.py --release 0.56.0``;
``--no-matrix`` skips them; arguments after ``--`` go to matrix.py).  If
the release's Requires-Python floor is not the one compat/interpreters.py
gives it (the environments and the matrix use that), it says so and stops
before the matrix: add the floor there, then run the matrix.  The package
takes its newest studied release from the table's ``releases`` line, and the
matrix and compat/run.py's default set follow it: no code changes.

Commands:

``python3 compat/fingerprints.py generate [--upto RELEASE]``
    Rebuild the whole table, 0.2.0 to RELEASE (default: the newest release
    already in the table).  Needed when keepalive_guard/fingerprint.py or the
    method set changes (add-release refuses then and says so).

``python3 compat/fingerprints.py compute --dists DIR --out FILE.json``
    What generate and add-release run under each interpreter: fingerprint
    every ``uvicorn-*`` wheel or sdist in DIR with the running interpreter.
    Nothing is imported from uvicorn: the module source is compiled with
    ``compile()``, the class body's code object is found in the module's
    ``co_consts`` and each method's in the class body's (both by
    ``co_name``); the method names and whether each has a docstring come
    from the AST.  Releases whose source does not compile here
    (SyntaxError) are skipped with a note.  Output: ``{release: {impl:
    {"Class.method": fingerprint}}, "_python": "3.x.y", "_skipped":
    {release: reason}}``.

Downloads go to compat/.work/uvicorn-dists (``--dists DIR`` elsewhere), from
the index's PEP 691 JSON page for uvicorn (``$KEEPALIVE_GUARD_INDEX``,
default https://pypi.org/simple): pip cannot download an sdist without
building it, and the 0.2.x sdists do not build.  Interpreters: as
compat/interpreters.py finds them (``KEEPALIVE_GUARD_PYTHONS`` overrides).
generate and add-release need ``packaging`` (run them on a recent Python);
``compute`` and ``studied_releases()`` must stay runnable on Python 3.6.
"""

import argparse
import ast
import glob
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # compat/interpreters.py (generate and add-release only)
ROOT = os.path.dirname(HERE)
FINGERPRINT_PY = os.path.join(ROOT, "keepalive_guard", "fingerprint.py")
OUTPUT = os.path.join(ROOT, "keepalive_guard", "fingerprints.txt")
DISTS = os.path.join(HERE, ".work", "uvicorn-dists")
INDEX = os.environ.get("KEEPALIVE_GUARD_INDEX", "https://pypi.org/simple").rstrip("/")

FIRST_RELEASE = "0.2.0"  # 0.0.x and 0.1.x are another design
MINORS = tuple(range(6, 14))  # CPython 3.6 .. 3.13

#: (impl, module file names newest first, classes whose functions are fingerprinted)
IMPLS = (
    ("h11", ("h11_impl.py", "h11.py"), ("H11Protocol", "RequestResponseCycle")),
    (
        "httptools",
        ("httptools_impl.py", "httptools.py"),
        ("HttpToolsProtocol", "RequestResponseCycle"),
    ),
)

#: Bump when what is fingerprinted changes (the method set, the module rules):
#: add-release then refuses to extend a table made the old way.
METHOD_SET = "2"

_DIST_RE = re.compile(r"^uvicorn-([^-]+?)(?:-py[^-]*-none-any\.whl|\.tar\.gz)$")
_STAMP = "# stamp: "


def _note(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def studied_releases(path=OUTPUT):
    """The table's ``releases`` line, in PEP 440 order (the last is the newest)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith("releases "):
                return line.split()[1:]
    raise SystemExit("no releases line in " + path)


def stamp():
    """What the table's fingerprints depend on besides the releases' code."""
    with open(FINGERPRINT_PY, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    return "fingerprint.py sha256 {} method-set {}".format(digest, METHOD_SET)


# --------------------------------------------------------------------- compute


def _load_code_fingerprint():
    # Load the file directly: importing the keepalive_guard package would run
    # its __init__ (which may import things this interpreter cannot).
    spec = importlib.util.spec_from_file_location("_kg_fingerprint", FINGERPRINT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.code_fingerprint


def dists_in(directory):
    """{release: path} for the uvicorn wheels and sdists in ``directory`` (wheel wins)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "uvicorn-*"))):
        match = _DIST_RE.match(os.path.basename(path))
        if match is not None and not (match.group(1) in found and path.endswith(".tar.gz")):
            found[match.group(1)] = path
    return found


def _read_members(path):
    """{"uvicorn/...": bytes} of the protocol modules and metadata of a wheel or sdist."""
    wanted = set("uvicorn/protocols/http/" + name for _, names, _ in IMPLS for name in names)
    out = {}
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name in wanted or name.endswith(".dist-info/METADATA"):
                    out["METADATA" if name.endswith("METADATA") else name] = archive.read(name)
        return out
    with tarfile.open(path) as archive:  # sdist: <top>/uvicorn/..., <top>/PKG-INFO
        for member in archive.getmembers():
            top, _, name = member.name.partition("/")
            if member.isfile() and (name in wanted or name == "PKG-INFO"):
                out["METADATA" if name == "PKG-INFO" else name] = archive.extractfile(member).read()
    return out


def module_of(members, impl):
    """(file name, source) of ``impl``'s module in a release."""
    for _impl, names, _ in IMPLS:
        if _impl == impl:
            present = [n for n in names if "uvicorn/protocols/http/" + n in members]
            if len(present) != 1:
                raise ValueError("{} module: found {}".format(impl, present or "none"))
            return present[0], members["uvicorn/protocols/http/" + present[0]]
    raise KeyError(impl)


def _class_functions(tree, class_name):
    """{function name: has_docstring} of the module-level class."""
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    if len(classes) != 1:
        raise ValueError("class {} defined {} times".format(class_name, len(classes)))
    functions = {}
    for item in classes[0].body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if item.name in functions:
                raise ValueError("{}.{} defined twice".format(class_name, item.name))
            functions[item.name] = ast.get_docstring(item, clean=False) is not None
    return functions


def _code_named(code, name, what):
    found = [c for c in code.co_consts if hasattr(c, "co_name") and c.co_name == name]
    if len(found) != 1:
        raise ValueError("{}: {} code objects".format(what, len(found)))
    return found[0]


def fingerprint_source(source, filename, class_names, code_fingerprint):
    """{"Class.method": fingerprint} of every function of the classes in ``source``.

    Raises SyntaxError if this interpreter cannot compile ``source``.
    """
    module_code = compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename)
    result = {}
    for class_name in class_names:
        class_code = _code_named(module_code, class_name, "class " + class_name)
        for name, has_doc in _class_functions(tree, class_name).items():
            key = class_name + "." + name
            result[key] = code_fingerprint(_code_named(class_code, name, key), has_doc)
    return result


def compute(dists_dir, out_path):
    code_fingerprint = _load_code_fingerprint()
    python = "{}.{}.{}".format(*sys.version_info[:3])
    output = {"_python": python, "_skipped": {}}
    dists = dists_in(dists_dir)
    if not dists:
        _note("no uvicorn wheels or sdists in {}".format(dists_dir))
        return 1
    for release, path in dists.items():
        members = _read_members(path)
        entry = {}
        try:
            for impl, _, class_names in IMPLS:
                filename, source = module_of(members, impl)
                entry[impl] = fingerprint_source(source, filename, class_names, code_fingerprint)
        except SyntaxError as exc:
            reason = "SyntaxError: {} ({}, line {})".format(exc.msg, exc.filename, exc.lineno)
            _note("python {}: skipping uvicorn {}: {}".format(python, release, reason))
            output["_skipped"][release] = reason
            continue
        except ValueError as exc:
            raise SystemExit("uvicorn {} ({}): {}".format(release, path, exc)) from None
        output[release] = entry
    with open(out_path, "w") as handle:
        json.dump(output, handle, indent=1, sort_keys=True)
    return 0


# ------------------------------------------------------------ index, downloads


def index_files():
    """{release: [file dict]} from the index's PEP 691 JSON page for uvicorn."""
    import urllib.request

    request = urllib.request.Request(
        INDEX + "/uvicorn/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.load(response)
    releases = {}
    for item in data["files"]:
        match = _DIST_RE.match(item["filename"])
        if match is not None:
            releases.setdefault(match.group(1), []).append(item)
    return releases


def _usable(files):
    """The file to read for a release: its wheel, else its sdist; None if yanked."""
    files = [f for f in files if not f.get("yanked")]
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    return (wheels or files or [None])[0]


def index_releases(files, low, high):
    from packaging.version import Version

    chosen = [r for r in files if Version(low) <= Version(r) <= Version(high)]
    yanked = sorted(r for r in chosen if _usable(files[r]) is None)
    if yanked:
        _note("left out (yanked): " + ", ".join(yanked))
    return sorted((r for r in chosen if r not in yanked), key=Version)


def ensure_dists(releases, files, dists_dir):
    """{release: local path}, downloading what ``dists_dir`` lacks (sha256 checked)."""
    import urllib.request

    os.makedirs(dists_dir, exist_ok=True)
    for release in releases:
        item = _usable(files.get(release, []))
        if item is None:
            raise SystemExit("uvicorn {}: no usable file on {} (yanked?)".format(release, INDEX))
        path = os.path.join(dists_dir, item["filename"])
        if os.path.exists(path):
            continue
        _note("downloading " + item["filename"])
        with urllib.request.urlopen(item["url"], timeout=120) as response:
            body = response.read()
        if hashlib.sha256(body).hexdigest() != item["hashes"]["sha256"]:
            raise SystemExit("{}: sha256 differs from the index's".format(item["filename"]))
        with open(path + ".part", "wb") as handle:
            handle.write(body)
        os.replace(path + ".part", path)
    have = dists_in(dists_dir)
    return dict((release, have[release]) for release in releases)


# ------------------------------------------------------------ fingerprint all


def _declared(path):
    """(Requires-Python or None, [3.x minors of the classifiers]) of a release."""
    metadata = _read_members(path).get("METADATA", b"").decode("utf-8", "replace")
    requires, classified = None, []
    for line in metadata.splitlines():
        if line.startswith("Requires-Python:"):
            requires = line.split(":", 1)[1].strip()
        match = re.match(r"^Classifier: Programming Language :: Python :: 3\.(\d+)\s*$", line)
        if match:
            classified.append(int(match.group(1)))
    return requires, classified


def _claimed_minors(path):
    """Python 3 minors a release says it supports (None: cannot tell)."""
    from packaging.specifiers import SpecifierSet

    requires, classified = _declared(path)
    if requires:
        spec = SpecifierSet(requires)
        return set(m for m in MINORS if "3.{}.0".format(m) in spec)
    if classified:  # no Requires-Python: lowest classifier onwards
        return set(m for m in MINORS if m >= min(classified))
    return None


def floor_problems(dists):
    """Releases whose Requires-Python floor is not compat/interpreters.py's.

    The matrix and the environments take each release's oldest Python from
    interpreters.supported_pythons(); a release without Requires-Python runs
    on 3.6 whatever its classifiers say (UVICORN-HISTORY.md).
    """
    import interpreters

    problems = []
    for release, path in dists.items():
        claimed = _claimed_minors(path) if _declared(path)[0] else None
        ours = interpreters.supported_pythons(release)[0]
        if claimed and "3.{}".format(min(claimed)) != ours:
            problems.append(
                "uvicorn {} declares Requires-Python {}, compat/interpreters.py's _FLOORS "
                "give it {}: add its floor there".format(release, _declared(path)[0], ours)
            )
    return problems


def _interpreters():
    """[(minor, "3.x.y", path)] from compat/interpreters.py, one per minor."""
    import interpreters

    found = interpreters.find_interpreters()
    missing = [m for m in interpreters.MINORS if m not in found]
    if missing:
        _note("WARNING: no interpreter found for " + ", ".join(missing))
    if not found:
        raise SystemExit("no interpreters found")
    result = []
    for minor, path in found.items():
        result.append(
            (int(minor.split(".")[1]), interpreters.interpreter_info(path)["version"], path)
        )
    return result


def fingerprint_all(dists, interpreters):
    """{release: {impl: {key: fp}}} agreed on by every interpreter that compiles it.

    Exits (writing nothing) if interpreters disagree or a release compiles nowhere.
    """
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        wanted = os.path.join(scratch, "dists")  # only these releases, even if DIR holds more
        os.mkdir(wanted)
        for path in dists.values():
            os.symlink(os.path.abspath(path), os.path.join(wanted, os.path.basename(path)))
        for minor, version, path in interpreters:
            out_path = os.path.join(scratch, "3.{}.json".format(minor))
            _note("fingerprinting {} release(s) with CPython {}".format(len(dists), version))
            command = [path, os.path.abspath(__file__), "compute", "--dists", wanted]
            if subprocess.run(command + ["--out", out_path]).returncode != 0:
                raise SystemExit("compute failed under " + path)
            with open(out_path) as handle:
                results[version] = json.load(handle)
    merged, problems, unexpected = {}, [], []
    for release, path in dists.items():
        by_python = [(v, results[v][release]) for _, v, _ in interpreters if release in results[v]]
        if not by_python:
            problems.append("{}: compiled by no interpreter".format(release))
            continue
        claimed = _claimed_minors(path)
        for minor, version, _ in interpreters:
            if release not in results[version] and claimed is not None and minor in claimed:
                reason = results[version]["_skipped"].get(release, "?")
                unexpected.append("uvicorn {} on CPython {}: {}".format(release, version, reason))
        reference_python, reference = by_python[0]
        for version, entry in by_python[1:]:
            for impl, _, _ in IMPLS:
                for key in sorted(set(entry[impl]) | set(reference[impl])):
                    mine, theirs = entry[impl].get(key), reference[impl].get(key)
                    if mine != theirs:
                        problems.append(
                            "uvicorn {} {} {}: {} on {} but {} on {}".format(
                                release, impl, key, theirs, reference_python, mine, version
                            )
                        )
        merged[release] = reference
    _note(
        "compiled by: "
        + "; ".join(
            "{}: {}/{}".format(v, len([r for r in dists if r in results[v]]), len(dists))
            for _, v, _ in interpreters
        )
    )
    if unexpected:
        _note("releases that do not compile on a Python they claim to support:")
        for line in unexpected:
            _note("  " + line)
    if problems:
        _note("INTERPRETERS DISAGREE ({} problem(s)); {} not written".format(len(problems), OUTPUT))
        for line in problems:
            _note("  " + line)
        raise SystemExit(1)
    return merged


# ------------------------------------------------------------------ the table


def render_table(merged, interpreters):
    """The text of keepalive_guard/fingerprints.txt (read by keepalive_guard.fingerprint)."""
    from packaging.version import Version

    releases = sorted(merged, key=Version)
    lines = [
        "# Generated by `python3 compat/fingerprints.py generate` / `add-release X`. Do not edit.",
        "#",
        "# <impl> <Class.method> <fingerprint> <release> ...: the releases (PEP 440 order) whose",
        "# uvicorn/protocols/http/<impl>_impl.py (<impl>.py before 0.2.17) defines that function",
        '# in that class with exactly that code; fingerprint "-": the release does not define it.',
        "# Every function of " + ", ".join(sorted(set(c for _, _, cs in IMPLS for c in cs))) + ".",
        "# Fingerprint: keepalive_guard.fingerprint.code_fingerprint of the function compiled",
        "# from the release's source.  Every one of these interpreters that compiles a release",
        "# gave the same fingerprints for it: " + interpreters + ".",
        _STAMP + stamp(),
        "releases " + " ".join(releases),
    ]
    for impl, _, class_names in IMPLS:
        keys = set(k for entry in merged.values() for k in entry[impl])
        for class_name in class_names:
            for key in sorted(k for k in keys if k.split(".")[0] == class_name):
                groups = {}
                for release in releases:  # groups in order of their first release
                    groups.setdefault(merged[release][impl].get(key) or "-", []).append(release)
                for fp, found in groups.items():
                    lines.append(" ".join([impl, key, fp] + found))
    return "\n".join(lines) + "\n"


def read_table(path=OUTPUT):
    """(merged {release: {impl: {key: fp}}}, stamp line, interpreters text) of a table."""
    merged, table_stamp, pythons = {}, None, "?"
    with open(path) as handle:
        for line in handle:
            words = line.split()
            if line.startswith(_STAMP):
                table_stamp = line[len(_STAMP) :].strip()
            elif line.startswith("# gave the same fingerprints for it: "):
                pythons = line.split(": ", 1)[1].strip().rstrip(".")
            elif words and words[0] == "releases":
                merged = dict((r, dict((impl, {}) for impl, _, _ in IMPLS)) for r in words[1:])
            elif words and not line.startswith("#"):
                impl, key, fp = words[:3]
                for release in words[3:]:
                    if fp != "-":
                        merged[release][impl][key] = fp
    return merged, table_stamp, pythons


def _pythons_text(interpreters):
    return "CPython " + ", ".join(v for _, v, _ in interpreters)


def _write(merged, interpreters_text):
    text = render_table(merged, interpreters_text)
    with open(OUTPUT, "w") as handle:
        handle.write(text)
    keys = sum(1 for line in text.splitlines() if line[:1] not in ("#", "r"))
    _note(
        "wrote {}: {} releases, {} lines, {} bytes".format(
            os.path.relpath(OUTPUT), len(merged), keys, len(text.encode())
        )
    )


def generate(dists_dir, upto):
    files = index_files()
    upto = upto or studied_releases()[-1]
    releases = index_releases(files, FIRST_RELEASE, upto)
    _note("{} releases: {} .. {}".format(len(releases), releases[0], releases[-1]))
    interpreters = _interpreters()
    dists = ensure_dists(releases, files, dists_dir)
    merged = fingerprint_all(dists, interpreters)
    _write(merged, _pythons_text(interpreters))
    for problem in floor_problems(dists):
        _note("WARNING: " + problem)
    return 0


def add_release(release, dists_dir, matrix, matrix_args):
    from packaging.version import Version

    release = str(Version(release))
    merged, table_stamp, pythons = read_table()
    if table_stamp != stamp():
        raise SystemExit(
            "the table was made with {!r}, this checkout fingerprints with {!r}: run "
            "`python3 compat/fingerprints.py generate --upto {}` instead".format(
                table_stamp, stamp(), max(list(merged) + [release], key=Version)
            )
        )
    interpreters = _interpreters()
    if _pythons_text(interpreters) != pythons:
        _note("note: the table's other releases were checked on " + pythons)
    files = index_files()
    if release not in files:
        raise SystemExit("uvicorn {} is not on {}".format(release, INDEX))
    dists = ensure_dists([release], files, dists_dir)
    merged[release] = fingerprint_all(dists, interpreters)[release]
    older = [r for r in merged if Version(r) < Version(release)]
    _write(merged, pythons)
    if older:
        previous = max(older, key=Version)
        for impl, _, _ in IMPLS:
            new, old = merged[release][impl], merged[previous][impl]
            changed = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
            _note(
                "{} {} vs {}: {}".format(
                    impl,
                    release,
                    previous,
                    "changed: " + ", ".join(changed) if changed else "no function changed",
                )
            )
    problems = floor_problems(dists)
    for problem in problems:
        _note("ERROR: " + problem + "; then run compat/matrix.py --release " + release)
    if problems:
        return 1
    if not matrix:
        return 0
    command = [sys.executable, os.path.join(HERE, "matrix.py"), "--release", release]
    _note("running " + " ".join(command[1:] + list(matrix_args)))
    return subprocess.run(command + list(matrix_args)).returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    p_compute = commands.add_parser("compute", help="fingerprint with this Python")
    p_compute.add_argument("--dists", required=True)
    p_compute.add_argument("--out", required=True)
    p_generate = commands.add_parser("generate", help="rebuild keepalive_guard/fingerprints.txt")
    p_generate.add_argument("--dists", default=DISTS)
    p_generate.add_argument("--upto", help="newest release (default: the table's newest)")
    p_add = commands.add_parser("add-release", help="add one release, run its matrix cells")
    p_add.add_argument("release")
    p_add.add_argument("--dists", default=DISTS)
    p_add.add_argument("--no-matrix", action="store_true", help="do not run its matrix cells")
    p_add.add_argument("matrix_args", nargs="*", help="after --: passed to compat/matrix.py")
    args = parser.parse_args(argv)
    if args.command == "compute":
        return compute(args.dists, args.out)
    if args.command == "generate":
        return generate(args.dists, args.upto)
    if args.command == "add-release":
        return add_release(args.release, args.dists, not args.no_matrix, args.matrix_args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
