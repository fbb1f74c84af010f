"""The public API, in process, against the installed uvicorn release.

``conftest.has_bug`` / ``FIRST_FIXED`` (straight from BUGS.md) are the oracle
for what each fix should be: "applied" where the release has the bug, "fixed
upstream" where it does not, "not applicable" where the bug never existed for
that implementation.  Every test leaves uvicorn's classes exactly as they were
(checked by identity after each test).
"""

import logging
import threading

import h11
import pytest
import uvicorn
from conftest import (
    FIRST_BROKEN,
    FIRST_FIXED,
    NEVER,
    OPT_IN,
    any_bug,
    expected_state,
    has_bug,
    protocol_module,
    uvicorn_version,
)
from packaging.version import Version

import keepalive_guard
from keepalive_guard import KeepaliveGuardError, Report

h11_impl = protocol_module("h11")
httptools_impl = protocol_module("httptools")  # None: the guard reports it not applicable

ALL_FIXES = tuple(FIRST_FIXED)
FIXES = tuple(fix for fix in ALL_FIXES if fix not in OPT_IN)  # what "all" selects
IMPLS = ("h11", "httptools")
STATES = ("applied", "fixed upstream", "not applicable", "unrecognised", "disabled", "pending")

CLASSES = [h11_impl.H11Protocol, h11_impl.RequestResponseCycle]
if httptools_impl is not None:
    CLASSES += [httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle]
LOADED_IMPLS = ("h11", "httptools") if httptools_impl is not None else ("h11",)


def snapshot():
    return [(cls, dict(cls.__dict__)) for cls in CLASSES]


def differences(snap):
    """Every attribute that is not exactly (by identity) what ``snap`` holds."""
    out = []
    for cls, before in snap:
        now = dict(cls.__dict__)
        for name in sorted(set(before) | set(now)):
            if name not in now:
                out.append("{}.{} removed".format(cls.__name__, name))
            elif name not in before:
                out.append("{}.{} added ({!r})".format(cls.__name__, name, now[name]))
            elif now[name] is not before[name]:
                out.append("{}.{} replaced ({!r})".format(cls.__name__, name, now[name]))
    return out


def changed(snap):
    """(class, name) of every attribute that differs from ``snap``."""
    out = []
    for cls, before in snap:
        now = dict(cls.__dict__)
        for name in sorted(set(before) | set(now)):
            if before.get(name, snap) is not now.get(name, snap):
                out.append((cls, name))
    return out


PRISTINE = snapshot()


def expected(fix, impl, selection=FIXES):
    """What the guard must report for ``fix`` on ``impl`` once installed."""
    if fix not in selection:
        return "disabled"
    if impl not in LOADED_IMPLS:
        return "not applicable"
    return expected_state(fix, impl)


def states(report):
    return {(s.fix, s.implementation): s.state for s in report.fixes}


def expected_states(selection=FIXES):
    return {(fix, impl): expected(fix, impl, selection) for fix in ALL_FIXES for impl in IMPLS}


ANY_APPLIED = any(expected(fix, impl) == "applied" for fix in FIXES for impl in LOADED_IMPLS)


@pytest.fixture
def guard():
    keepalive_guard.uninstall()
    assert differences(PRISTINE) == [], "a previous test left uvicorn patched"
    yield keepalive_guard
    keepalive_guard.uninstall()
    assert differences(PRISTINE) == []


def test_catalogue_and_error_type():
    assert tuple(keepalive_guard.FIX_IDS) == ALL_FIXES
    assert issubclass(KeepaliveGuardError, ValueError)
    # The oracle's premise: ``cycle`` is an instance attribute in uvicorn
    # (a slot, with a member descriptor on the class, in 0.2.0-0.2.20 httptools).
    for cls, before in PRISTINE:
        assert "cycle" not in before or _is_slot(cls, "cycle"), cls


def _is_slot(cls, name):
    return name in getattr(cls, "__slots__", ()) and type(cls.__dict__[name]).__name__ == (
        "member_descriptor"
    )


# --- install / status -------------------------------------------------------


def test_install_returns_report(guard):
    report = guard.install()
    assert isinstance(report, Report)
    assert report.installed is True and report.strict is False
    assert report.selected == list(FIXES)
    assert states(report) == expected_states()
    assert len(report.fixes) == len(ALL_FIXES) * len(IMPLS)
    for s in report.fixes:
        assert s.state in STATES
        assert s.reason and s.upstream
        if s.state == "fixed upstream":
            assert FIRST_FIXED[s.fix][s.implementation] in s.reason
    assert states(guard.status()) == expected_states()
    assert states(guard.status(import_modules=False)) == expected_states()
    as_dict = report.as_dict()
    assert as_dict["installed"] is True and len(as_dict["fixes"]) == len(ALL_FIXES) * len(IMPLS)
    text = report.format()
    for fix in ALL_FIXES:
        assert "\n{} ".format(fix) in text


def test_versions_reported(guard):
    try:
        import httptools
    except ImportError:
        httptools = None
    wanted = {
        "uvicorn": uvicorn.__version__,
        "h11": h11.__version__,
        # httptools 0.0.13 (uvicorn 0.11 on Python 3.6) has no __version__.
        "httptools": None if httptools is None else getattr(httptools, "__version__", "unknown"),
    }
    assert guard.install().versions == wanted
    assert guard.status().versions == wanted
    assert guard.uninstall().versions == wanted


def test_status_when_not_installed(guard):
    for report in (guard.status(), guard.status(import_modules=False)):
        assert report.installed is False
        for (fix, impl), state in states(report).items():
            want = expected(fix, impl)
            if want == "applied":
                assert state == "pending", (fix, impl)
                assert "not installed" in report.get(fix, impl).reason
            else:
                assert state == want, (fix, impl)
    if ANY_APPLIED:
        assert guard.status().problems
    guard.install()
    report = guard.uninstall()
    assert report.installed is False
    assert "applied" not in states(report).values()


def test_install_patches_only_where_a_bug_is_fixed(guard):
    guard.install()
    patched = changed(PRISTINE)
    if ANY_APPLIED:
        assert patched, "fixes reported applied but no class attribute changed"
    else:
        assert patched == [], "release has every fix upstream, yet classes changed"
    for cls, name in patched:
        impl = "h11" if cls.__module__.rpartition(".")[2].startswith("h11") else "httptools"
        assert any(expected(fix, impl) == "applied" for fix in FIXES), (cls, name)


# --- uninstall ---------------------------------------------------------------


def test_uninstall_restores_every_original_exactly(guard):
    guard.install()
    guard.uninstall()
    assert differences(PRISTINE) == []
    for cls, _ in PRISTINE:
        assert "cycle" not in cls.__dict__ or _is_slot(cls, "cycle")


def test_install_uninstall_cycles(guard):
    first = None
    for _ in range(3):
        guard.install()
        now = sorted((cls.__name__, name) for cls, name in changed(PRISTINE))
        assert first is None or now == first
        first = now
        guard.uninstall()
        assert differences(PRISTINE) == []


def test_install_twice_is_idempotent(guard):
    guard.install()
    once = snapshot()
    for again in (None, "all", "e2, d, C, e, b, A, r5, R3, r2, r1", list(FIXES), "all,R4,-R4"):
        report = guard.install(fixes=again)
        assert differences(once) == [], again
        assert states(report) == expected_states()


def test_uninstall_twice(guard):
    guard.uninstall()
    guard.install()
    assert guard.uninstall().installed is False
    assert guard.uninstall().installed is False
    assert differences(PRISTINE) == []


# --- fix selection -----------------------------------------------------------


@pytest.mark.parametrize(
    "fixes, selected",
    [
        ("C,D", ("C", "D")),
        ("-E2", tuple(fix for fix in FIXES if fix != "E2")),
        (["E"], ("E",)),
        ("e2 c", ("C", "E2")),
        ("ALL,-c,-D,-R1,-R2,-R3,-R5", ("A", "B", "E", "E2")),
        ("b,a", ("A", "B")),
        (("d",), ("D",)),
        ("all,R4", ALL_FIXES),
        ("r4", ("R4",)),
        ("R4,-all", ()),
        ("r3,R5", ("R3", "R5")),
    ],
)
def test_fix_selection(guard, fixes, selected):
    report = guard.install(fixes=fixes)
    assert report.selected == list(selected)
    assert states(report) == expected_states(selected)
    assert states(guard.status()) == expected_states(selected)
    # Unselected fixes patch nothing the full set would not.
    partial = set(changed(PRISTINE))
    guard.uninstall()
    guard.install(fixes="all,R4")
    assert partial <= set(changed(PRISTINE))


def test_env_selection(guard, monkeypatch):
    monkeypatch.setenv("KEEPALIVE_GUARD_FIXES", "d,E")
    assert guard.install().selected == ["D", "E"]
    assert states(guard.status()) == expected_states(("D", "E"))
    # an explicit argument wins over the environment
    assert guard.install(fixes="C").selected == ["C"]
    guard.uninstall()
    monkeypatch.setenv("KEEPALIVE_GUARD_FIXES", " ")
    assert guard.install().selected == list(FIXES)


@pytest.mark.parametrize("bad", ["C,X", ["E", "E3"], "-F", "C;D"])
def test_misspelt_fix_raises_and_changes_nothing(guard, bad):
    guard.install(fixes="C,D")
    before, report_before = snapshot(), guard.status()
    with pytest.raises(KeepaliveGuardError) as info:
        guard.install(fixes=bad)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for name in ALL_FIXES:
        assert name in message
    assert differences(before) == []
    report = guard.status()
    assert report.installed and report.selected == ["C", "D"]
    assert states(report) == states(report_before)
    # and from the uninstalled state
    guard.uninstall()
    with pytest.raises(KeepaliveGuardError):
        guard.install(fixes=bad)
    assert differences(PRISTINE) == [] and guard.status().installed is False


def test_misspelt_env_selection(guard, monkeypatch):
    monkeypatch.setenv("KEEPALIVE_GUARD_FIXES", "C,Dee")
    with pytest.raises(KeepaliveGuardError) as info:
        guard.install()
    assert "KEEPALIVE_GUARD_FIXES" in str(info.value) and "Dee" in str(info.value)
    assert differences(PRISTINE) == [] and guard.status().installed is False
    assert guard.install(fixes="all").selected == list(FIXES)  # explicit wins


def test_reinstall_with_other_selection(guard):
    guard.install(fixes="C,D")
    report = guard.install(fixes="E,E2")
    assert report.selected == ["E", "E2"]
    assert states(report) == expected_states(("E", "E2"))
    assert states(guard.status()) == expected_states(("E", "E2"))
    only_e = set(changed(PRISTINE))
    guard.uninstall()
    guard.install(fixes="E,E2")
    assert set(changed(PRISTINE)) == only_e, "re-install left other fixes' patches behind"
    guard.install(fixes="all")
    full = set(changed(PRISTINE))
    guard.uninstall()
    guard.install()
    assert set(changed(PRISTINE)) == full
    guard.install(fixes="C,D")
    guard.uninstall()
    assert differences(PRISTINE) == []


# --- unrecognised code ------------------------------------------------------


def _foreign_on_response_complete(self):  # a "distro patch" of uvicorn
    pass


# The fixes that rely on h11's on_response_complete (C, D, E and R3 hook it; E2
# and R5 read it); A and B work on connection_lost and the cycle's send() and receive().
_COMPLETION_FIXES = ("C", "D", "E", "E2", "R3", "R5")


def test_unrecognised_method_is_left_alone(guard, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="keepalive_guard")
    monkeypatch.setattr(
        h11_impl.H11Protocol,
        "on_response_complete",
        _foreign_on_response_complete,
        raising=False,  # 0.2.0-0.2.20 have none: then no fix relies on it
    )
    modified = snapshot()
    report = guard.install()
    got = states(report)
    assert h11_impl.H11Protocol.__dict__["on_response_complete"] is _foreign_on_response_complete
    warnings = [
        r for r in caplog.records if r.name == "keepalive_guard" and r.levelno == logging.WARNING
    ]
    timer_fixes = [fix for fix in _COMPLETION_FIXES if has_bug(fix, "h11")]
    for fix in FIXES:
        for impl in IMPLS:
            if impl == "h11" and fix in timer_fixes:
                assert got[fix, impl] == "unrecognised", (fix, impl)
                reason = report.get(fix, impl).reason
                assert "H11Protocol.on_response_complete" in reason
                assert any(
                    fix in r.getMessage() and "on_response_complete" in r.getMessage()
                    for r in warnings
                ), fix
            else:
                assert got[fix, impl] == expected(fix, impl), (fix, impl)
    if not any(has_bug(fix, "h11") for fix in FIXES):
        # every fix is upstream in this release: nothing to recognise, no warning
        for fix in FIXES:
            assert got[fix, "h11"] == expected(fix, "h11")
        assert warnings == []
    assert len(warnings) == (1 if timer_fixes else 0), "one WARNING per module, naming every fix"
    assert {s.fix for s in report.problems if s.implementation == "h11"} == set(timer_fixes)
    guard.uninstall()
    assert differences(modified) == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_unrecognised_method_strict(guard, monkeypatch, how):
    monkeypatch.setattr(
        h11_impl.H11Protocol, "on_response_complete", _foreign_on_response_complete, raising=False
    )
    modified = snapshot()
    kwargs = {"strict": True} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("KEEPALIVE_GUARD_STRICT", "1")
    if any(has_bug(fix, "h11") for fix in ("D", "E", "E2", "R3", "R5")):
        with pytest.raises(KeepaliveGuardError) as info:
            guard.install(**kwargs)
        assert "H11Protocol.on_response_complete" in str(info.value)
        assert differences(modified) == [], "strict mode must patch nothing"
        assert guard.status().installed is False
    else:
        report = guard.install(**kwargs)
        assert report.strict is True
        for fix in ("D", "E", "E2"):
            assert report.get(fix, "h11").state == expected(fix, "h11")


def _foreign_httptools_on_response_complete(self):
    pass


def test_failed_strict_reinstall_keeps_previous_install(guard, monkeypatch):
    """A strict re-install that fails leaves the previous install in force."""
    if httptools_impl is None:
        pytest.skip("needs httptools")
    # E2 (h11 only) does not depend on HttpToolsProtocol.on_response_complete.
    guard.install(fixes="E2")
    before = sorted((c.__name__, n) for c, n in changed(PRISTINE))
    before_states = states(guard.status())
    monkeypatch.setattr(
        httptools_impl.HttpToolsProtocol,
        "on_response_complete",
        _foreign_httptools_on_response_complete,
        raising=False,
    )
    if any(has_bug(fix, "httptools") for fix in ("C", "D", "E", "R1", "R2", "R3", "R5")):
        with pytest.raises(KeepaliveGuardError) as info:
            guard.install(strict=True)
        assert "HttpToolsProtocol.on_response_complete" in str(info.value)
        report = guard.status()
        assert report.installed and report.selected == ["E2"] and not report.strict
        assert states(report) == before_states
        foreign = (httptools_impl.HttpToolsProtocol, "on_response_complete")
        now = sorted((c.__name__, n) for c, n in changed(PRISTINE) if (c, n) != foreign)
        assert now == before
    else:
        report = guard.install(strict=True)
        assert report.strict and states(report) == expected_states()
    guard.uninstall()


def _foreign_handle_events(self):
    pass


_H11_EVENT_FIXES = [fix for fix in ("C", "E", "E2", "R3") if has_bug(fix, "h11")]


def test_failed_strict_reinstall_changes_nothing(guard, monkeypatch):
    """A method our fixes inspect is patched by others: strict re-install fails, changes nothing."""
    guard.install()
    ours, report_before = snapshot(), states(guard.status())
    monkeypatch.setattr(
        h11_impl.H11Protocol, "handle_events", _foreign_handle_events, raising=False
    )
    if not _H11_EVENT_FIXES:
        assert guard.install(strict=True).strict is True
        return
    with pytest.raises(KeepaliveGuardError):
        guard.install(strict=True)
    assert changed(ours) == [(h11_impl.H11Protocol, "handle_events")], "patches were changed"
    assert states(guard.status()) == report_before


@pytest.mark.parametrize("version", ["0.1.0", "not-a-version"])
def test_unsupported_uvicorn_version(guard, monkeypatch, caplog, version):
    """0.0.x-0.1.x (another design) and non-PEP 440 versions: every fix refused, one WARNING."""
    caplog.set_level(logging.INFO, logger="keepalive_guard")
    monkeypatch.setattr(uvicorn, "__version__", version)
    report = guard.install()
    assert report.versions["uvicorn"] == version
    for s in report.fixes:
        if FIRST_FIXED[s.fix][s.implementation] is None:
            # E2 h11-only, R1 and R2 httptools-only on every release: structural,
            # whatever the version says.
            assert s.state == "not applicable", s
            continue
        if s.fix in OPT_IN:
            assert s.state == "disabled", s
            continue
        assert s.state == "unrecognised", s
        assert version in s.reason
    assert differences(PRISTINE) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(LOADED_IMPLS), [r.getMessage() for r in warnings]
    guard.uninstall()
    with pytest.raises(KeepaliveGuardError) as info:
        guard.install(strict=True)
    assert version in str(info.value)
    assert differences(PRISTINE) == [] and guard.status().installed is False


def test_newer_release_than_studied_keeps_upstream_fixes(guard, monkeypatch, caplog):
    """What upstream fixed stays fixed in a release newer than any studied: no WARNING.
    A fix with no upstream fix is decided by the (here unchanged, studied) code."""
    from keepalive_guard.fingerprint import studied

    caplog.set_level(logging.INFO, logger="keepalive_guard")
    newest = uvicorn.__version__ == studied()[-1]
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    report = guard.install()
    for fix in FIXES:
        for impl in LOADED_IMPLS:
            s = report.get(fix, impl)
            if FIRST_FIXED[fix][impl] is None:
                assert s.state == "not applicable", s
            elif FIRST_FIXED[fix][impl] == NEVER:
                if newest:  # the newest release's code, studied (else maybe not all of it)
                    assert s.state == ("disabled" if fix in OPT_IN else "applied"), s
            else:
                assert s.state == "fixed upstream", s
                assert "newer than the releases studied" in s.reason, s
    if newest:
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    guard.uninstall()
    assert differences(PRISTINE) == []


@pytest.mark.parametrize("suffix", ["+el8.1", ".post0+deb12u1", "+local"])
def test_local_labels_decide_like_the_release(guard, monkeypatch, suffix):
    """A distro's local label on a known release decides as that release where the code matches."""
    plain = states(guard.install())
    guard.uninstall()
    monkeypatch.setattr(uvicorn, "__version__", uvicorn.__version__ + suffix)
    assert states(guard.install()) == plain
    guard.uninstall()


def test_dev_build_of_a_release_decides_by_its_code(guard, monkeypatch):
    """X.dev0 sorts before X, so a fix first released in X is decided by the code: "fixed
    upstream" where X's code differs from the releases without the fix, else "applied"
    (fingerprints are sets of names: a call moved within a method looks the same, and
    re-applying what X already does is harmless).  Every other fix decides as X."""
    release = uvicorn.__version__
    plain = states(guard.install())
    guard.uninstall()
    monkeypatch.setattr(uvicorn, "__version__", release + ".dev0")
    dev = states(guard.install())
    guard.uninstall()
    released_here = {
        (fix, impl) for fix in FIXES for impl in IMPLS if FIRST_FIXED[fix][impl] == release
    }
    for key, state in dev.items():
        if key in released_here:
            assert state in ("fixed upstream", "applied"), (key, state)
        else:
            assert state == plain[key], (key, state, plain[key])


def test_unreadable_fingerprint_table_leaves_everything_alone(guard, monkeypatch):
    import keepalive_guard.fingerprint

    def unreadable():
        raise OSError("fingerprints.txt: permission denied")

    monkeypatch.setattr(keepalive_guard.fingerprint, "open_table", unreadable)
    report = guard.install()
    checked = [
        s for s in report.fixes if s.state not in ("fixed upstream", "not applicable", "disabled")
    ]
    assert len(checked) == len([1 for f in FIXES for i in IMPLS if has_bug(f, i)])
    for s in checked:
        assert s.state == "unrecognised", s
        assert "fingerprint table cannot be read" in s.reason and "permission denied" in s.reason
    assert differences(PRISTINE) == []
    guard.uninstall()


def test_a_method_that_is_not_a_function_is_unrecognised(guard, monkeypatch):
    # e.g. a C-accelerated replacement: nothing to fingerprint, so nothing to trust
    monkeypatch.setattr(h11_impl.H11Protocol, "on_response_complete", len, raising=False)
    modified = snapshot()
    report = guard.install()
    for fix in _COMPLETION_FIXES:
        if has_bug(fix, "h11"):
            s = report.get(fix, "h11")
            assert s.state == "unrecognised", s
            assert "on_response_complete (not a Python function)" in s.reason
    guard.uninstall()
    assert differences(modified) == []


def test_fingerprint_table_lookup():
    from keepalive_guard.fingerprint import open_table, studied, studied_releases

    with open_table() as f:
        table = f.read().decode("ascii")
    releases = table.split("\nreleases ", 1)[1].split("\n", 1)[0].split()
    assert releases == studied()
    assert releases[0] == "0.2.0" and "0.55.0" in releases and "0.17.0" not in releases
    assert releases == sorted(releases, key=Version)
    lines = [x for x in table.splitlines() if x.startswith("h11 H11Protocol.handle_events ")]
    assert len(lines) > 1  # the look-up must pick its own line, not the first of its method
    for line in lines:
        impl, key, fingerprint, *found = line.split()
        assert found and studied_releases(impl, key, fingerprint) == found
    assert studied_releases(impl, key, "0" * 16) == []
    assert studied_releases(impl, "H11Protocol.handle", fingerprint) == []
    assert studied_releases(impl, key, fingerprint[:-1]) == []  # a whole field, not a prefix


def test_fingerprint_table_read_through_the_loader(monkeypatch):
    """Installed in a zip, the table is no file to open: the loader reads it."""
    import keepalive_guard.fingerprint as fingerprint

    with fingerprint.open_table() as f:
        line = next(x for x in f.read().decode("ascii").splitlines() if x.startswith("h11 "))
    impl, key, digest, *found = line.split()

    def no_file(path, mode="r"):
        raise NotADirectoryError(path)  # what open() says of a path inside a zip

    loader = fingerprint.__spec__.loader
    read = []

    def get_data(path):
        read.append(path)
        return type(loader).get_data(loader, path)

    monkeypatch.setattr(fingerprint, "open", no_file, raising=False)
    monkeypatch.setattr(loader, "get_data", get_data)
    assert fingerprint.studied_releases(impl, key, digest) == found
    assert [p.endswith("fingerprints.txt") for p in read] == [True]


# --- someone else patched after us ------------------------------------------


def test_uninstall_refuses_after_foreign_replacement(guard):
    guard.install()
    patched = changed(PRISTINE)
    if not patched:
        assert not ANY_APPLIED
        assert "applied" not in states(guard.status()).values()
        return
    ours = snapshot()
    cls, name = patched[0]
    mine = cls.__dict__[name]

    def theirs(*args, **kwargs):
        pass

    setattr(cls, name, theirs)
    try:
        with pytest.raises(KeepaliveGuardError) as info:
            guard.uninstall()
        assert "{}.{}".format(cls.__name__, name) in str(info.value)
        assert [(c, n) for c, n in changed(ours)] == [(cls, name)], "something was reverted"
        assert guard.status().installed is True
    finally:
        setattr(cls, name, mine)
    assert guard.uninstall().installed is False
    assert differences(PRISTINE) == []


# --- logging and output -----------------------------------------------------


def test_one_info_record_per_patched_module_and_no_output(guard, caplog, capfd):
    """One line per loaded module: INFO where a fix was applied, DEBUG where
    the release needs none (so a guarded server that changed nothing adds
    nothing to its INFO log)."""
    caplog.set_level(logging.DEBUG, logger="keepalive_guard")
    guard.install()
    lines = [
        r
        for r in caplog.records
        if r.name == "keepalive_guard" and r.getMessage().startswith("keepalive-guard: uvicorn ")
    ]
    for impl in LOADED_IMPLS:
        mine = [r for r in lines if "({})".format(impl) in r.getMessage()]
        assert len(mine) == 1, [r.getMessage() for r in lines]
        assert uvicorn.__version__ in mine[0].getMessage()
        level = logging.INFO if any_bug(impl) else logging.DEBUG
        assert mine[0].levelno == level, mine[0].getMessage()
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == sum(1 for r in lines if r.levelno == logging.INFO)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    guard.install()
    guard.status()
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    guard.uninstall()
    guard.uninstall()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- threads ------------------------------------------------------------------


def test_concurrent_install_uninstall(guard):
    selections = [None, "C,D", "-E2", "E"]
    errors = []
    barrier = threading.Barrier(8)

    def worker(index):
        try:
            barrier.wait(timeout=10)
            for round_ in range(15):
                if (index + round_) % 2:
                    guard.install(fixes=selections[(index + round_) % len(selections)])
                else:
                    guard.uninstall()
                guard.status(import_modules=False)
        except BaseException as exc:  # noqa: B902 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "install/uninstall deadlocked"
    assert errors == []
    # The end state is one consistent install (or none): reinstalling everything
    # and uninstalling gives back the exact originals.
    report = guard.status()
    if report.installed:
        assert states(report) == expected_states(tuple(report.selected))
    guard.install()
    assert states(guard.status()) == expected_states()
    guard.uninstall()
    assert differences(PRISTINE) == []


def test_parse_version_is_pep440():
    from keepalive_guard.implementations import parse_version

    assert parse_version("0.27.0.post1") > parse_version("0.27.0")
    assert parse_version("0.27.0rc1") < parse_version("0.27.0") < parse_version("0.27.0+el8.1")
    assert parse_version("0.27.0+el8.1") < parse_version("0.27.1")
    assert parse_version("0.16.0.dev0") < parse_version("0.16.0")
    assert parse_version(" v0.12.2 ") == parse_version("0.12.2")
    for bad in ("", None, "not-a-version", "0.27.0+", "0.27..0"):
        assert parse_version(bad) is None, bad


def _foreign_timeout_handler(self):
    pass


def test_check_fails_on_an_r_fix_only_when_strict(guard, monkeypatch, capsys):
    """An R fix (no upstream fix) refused on unknown code: reported; fails only --strict."""
    from keepalive_guard import cli

    if not has_bug("R3", "h11"):
        pytest.skip(
            "uvicorn {} has no keep-alive timer, hence no R fix (from {})".format(
                uvicorn_version(), FIRST_BROKEN["R3"]
            )
        )

    # Only R3, R4 and R5 inspect the timer's handler.
    monkeypatch.setattr(
        h11_impl.H11Protocol, "timeout_keep_alive_handler", _foreign_timeout_handler
    )
    assert cli.main(["check"]) == 0
    err = capsys.readouterr().err
    assert "R3 (h11) not applied" in err and "R5 (h11) not applied" in err
    guard.uninstall()
    assert cli.main(["check", "--strict"]) == 1
    assert "R5 (h11): unrecognised" in capsys.readouterr().err
    guard.uninstall()
    monkeypatch.undo()
    assert cli.main(["check", "--strict"]) == 0
