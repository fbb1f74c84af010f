"""The user-facing documents: every link and file reference resolves inside the repository.

Checked: markdown links (``[text](target)``; a target must be a relative
path to a file or folder of the repository, anchors aside) and every
repository path named in code (``compat/run.py``, ``keepalive_guard.pth``),
in README.md, CHANGELOG.md and docs/design.md (docs/benchmarks.md is
generated from tests/bench/results.json).  The README stays under 200 lines
and names its test command, the duration, and the demo.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ("README.md", "CHANGELOG.md", os.path.join("docs", "design.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`|^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: a token naming a file of ours: a top-level folder of the repository, or a known file kind
PATH = re.compile(
    r"(?<![\w./-])((?:\.ci|compat|docs|tests|keepalive_guard)/[\w./-]*[\w/]"
    r"|[\w.-]+\.(?:py|md|pth|txt|json))(?![\w/])"
)
#: file names the documents mention that are not files of this repository
NOT_OURS = {"pyvenv.cfg"}


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def resolve(document, target):
    """The repository path a reference names (relative to the document for links)."""
    base = os.path.dirname(os.path.join(ROOT, document))
    return os.path.normpath(os.path.join(base, target))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_resolve_inside_repository(document):
    text = read(document)
    links = LINK.findall(text)
    bad = []
    for target in links:
        path = target.split("#", 1)[0]
        if re.match(r"^[a-z]+:", target) or not path:
            bad.append("{}: not a file of the repository".format(target))
            continue
        full = resolve(document, path)
        if not full.startswith(ROOT + os.sep) or not os.path.exists(full):
            bad.append("{}: does not exist".format(target))
    assert bad == [], "{}: {}".format(document, bad)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_file_references_exist(document):
    text = read(document)
    missing = []
    for inline, block in CODE.findall(text):
        for token in PATH.findall(inline or block):
            token = token.rstrip("/.")
            if os.path.basename(token) in NOT_OURS:
                continue
            full = os.path.join(ROOT, token)
            if not (os.path.exists(full) or os.path.exists(resolve(document, token))):
                missing.append(token)
    assert missing == [], "{} names files that do not exist: {}".format(document, missing)


def test_readme_is_short_and_says_how_to_start():
    text = read("README.md")
    assert len(text.splitlines()) < 200
    head = "\n".join(text.splitlines()[:30])  # the first screen
    for needed in ("pip install keepalive-guard", "KEEPALIVE_GUARD=1", "keepalive-guard check"):
        assert needed in head, needed
    assert "python3 compat/run.py" in text and re.search(r"\d+-\d+ minutes", text)
    assert "python3 compat/demo.py" in text


def test_ci_runs_the_readme_test_command():
    assert "python3 compat/run.py" in read(os.path.join(".ci", "run")).splitlines()[-1]


def test_benchmarks_page_is_the_rendering_of_results():
    """docs/benchmarks.md is what tests/bench/report.py renders from results.json."""
    text = read(os.path.join("docs", "benchmarks.md"))
    assert "tests/bench/run.py --render" in text
    assert os.path.exists(os.path.join(ROOT, "tests", "bench", "results.json"))
    assert not os.path.exists(os.path.join(ROOT, "tests", "bench", "RESULTS.md"))
