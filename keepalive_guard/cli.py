"""The ``keepalive-guard`` command (also ``python -m keepalive_guard``).

``status`` and ``check`` install the guard in this process exactly as
``import keepalive_guard.auto`` would (same environment variables), import
uvicorn's protocol modules, and report each decision; ``check`` exits 1 when
a fix that applies here cannot be applied, for CI gates and deploy checks.
A fix no upstream release has (R1-R5) that cannot be applied to code this
build does not recognise is reported, and fails only ``check --strict``.
"""

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from .config import parse_fixes
from .errors import KeepaliveGuardError
from .fixes import CATALOGUE
from .guard import install, status
from .report import APPLIED, DISABLED, FIXED_UPSTREAM, UNRECOGNISED

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _report(args: argparse.Namespace):
    """Install as the environment says, then report; a strict refusal is a problem to report."""
    fixes = parse_fixes(args.fixes)  # a misspelt name raises here: usage error
    try:
        install(fixes=fixes)
    except KeepaliveGuardError as exc:
        print("keepalive-guard: {}".format(exc), file=sys.stderr)
    return status(import_modules=True)


def _status(args: argparse.Namespace) -> int:
    report = _report(args)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(report.format())
        print(
            "(the decisions in this command's own process, where status installed the guard;\n"
            " a server applies them only if started through one of the README's routes, "
            "e.g. KEEPALIVE_GUARD=1)"
        )
        print("fixes:")
        for fix in CATALOGUE.values():
            print("  {:<3} {} ({})".format(fix.id, fix.summary, fix.upstream))
    return EXIT_OK


def _split_problems(report, strict: bool):
    """(what fails the check, what it only reports)."""
    failing, reported = [], []
    for s in report.problems:
        fix = CATALOGUE.get(s.fix)
        lenient = s.state == UNRECOGNISED and fix is not None and not fix.upstream_fixed
        (reported if lenient and not strict else failing).append(s)
    return failing, reported


def _check(args: argparse.Namespace) -> int:
    report = _report(args)
    problems, reported = _split_problems(report, args.strict)
    for s in reported:
        print(
            "keepalive-guard check: {} ({}) not applied (fails only --strict): {}".format(
                s.fix, s.implementation, s.reason
            ),
            file=sys.stderr,
        )
    if report.versions.get("uvicorn") is None:
        print("keepalive-guard check: uvicorn is not installed", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps(dict(report.as_dict(), ok=not problems), indent=2, sort_keys=True))
    elif problems:
        print("keepalive-guard check: FAILED", file=sys.stderr)
        for s in problems:
            print(
                "  {} ({}): {}: {}".format(s.fix, s.implementation, s.state, s.reason),
                file=sys.stderr,
            )
    else:
        groups = []
        for state in (APPLIED, FIXED_UPSTREAM, DISABLED):
            found = ["{} ({})".format(s.fix, s.implementation) for s in report.by_state(state)]
            if found:
                groups.append("{} {}".format(state, ", ".join(found)))
        print(
            "keepalive-guard check: ok, uvicorn {}: {}".format(
                report.versions["uvicorn"], "; ".join(groups)
            )
        )
    return EXIT_PROBLEM if problems else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .verify.runner import format_result, verify

    fixes = ",".join(parse_fixes(args.fixes)) or "none"
    result = verify(fixes, loop=args.loop)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_result(result))
    return EXIT_OK if result["ok"] else EXIT_PROBLEM


def _run(args: argparse.Namespace) -> int:
    """Replace this process with the command, the guard switched on for it and its children."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("keepalive-guard run: give a command, e.g. run -- uvicorn app:app", file=sys.stderr)
        return EXIT_USAGE
    if not _startup_hook_installed():
        print(
            "keepalive-guard run: keepalive_guard.pth is not in this interpreter's site-packages "
            "(install keepalive-guard from its wheel), so the command would not be guarded",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from .config import ENABLE, FIXES, STRICT

    env = dict(os.environ)
    env[ENABLE] = "1"
    if args.fixes is not None:
        env[FIXES] = ",".join(parse_fixes(args.fixes)) or "-all"
    if args.strict:
        env[STRICT] = "1"
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print("keepalive-guard run: {}: {}".format(command[0], exc.strerror), file=sys.stderr)
        return 127
    return EXIT_USAGE  # not reached


def _startup_hook_installed() -> bool:
    import site

    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    dirs.append(site.getusersitepackages())
    return any(os.path.exists(os.path.join(d, "keepalive_guard.pth")) for d in dirs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalive-guard",
        description="Backported uvicorn keep-alive fixes: what applies here, and is it applied.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every decision line of the guard (its DEBUG ones too) and others' INFO",
    )
    sub = parser.add_subparsers(dest="command")
    for name, func, text in (
        ("status", _status, "show each fix's decision for the installed uvicorn"),
        ("check", _check, "exit 1 if a fix that applies here cannot be applied"),
        (
            "verify",
            _verify,
            "reproduce each applicable bug against the installed uvicorn on 127.0.0.1, "
            "without and with the guard; exit 1 unless every one is fixed",
        ),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.add_argument(
            "--fixes",
            default=None,
            help="fix selection, e.g. 'all,-E2' (default: $KEEPALIVE_GUARD_FIXES or all)",
        )
        cmd.set_defaults(func=func)
    sub.choices["check"].add_argument(
        "--strict",
        action="store_true",
        help="also fail when a fix no upstream release has (R1-R5) cannot be applied",
    )
    sub.choices["verify"].add_argument(
        "--loop",
        default="asyncio",
        choices=("asyncio", "uvloop"),
        help="event loop (default asyncio)",
    )
    run = sub.add_parser(
        "run",
        help="run a command (and its children) with the guard on: run -- uvicorn app:app",
        description="Run COMMAND with KEEPALIVE_GUARD=1, replacing this process: the command, "
        "and every Python process it starts, installs the guard at start-up; signals and the "
        "exit status are the command's own.",
    )
    run.add_argument("--fixes", default=None, help="fix selection for the command")
    run.add_argument("--strict", action="store_true", help="refuse unrecognised code")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    run.set_defaults(func=_run)
    return parser


def main(argv: "Optional[List[str]]" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:  # where nothing is patched, the guard's line is at DEBUG
        logging.getLogger("keepalive_guard").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except KeepaliveGuardError as exc:
        print("keepalive-guard: {}".format(exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
