"""The ``keepalive-guard`` command (also ``python -m keepalive_guard``).

``status`` and ``check`` install the guard in this process exactly as
``import keepalive_guard.auto`` would (same environment variables), import
uvicorn's protocol modules, and report each decision; ``check`` exits 1 when
a fix that applies here cannot be applied, for CI gates and deploy checks.
"""

import argparse
import json
import logging
import sys
from typing import List, Optional

from .errors import KeepaliveGuardError
from .guard import install, status

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _report(args: argparse.Namespace):
    install(fixes=args.fixes, strict=False)
    return status(import_modules=True)


def _status(args: argparse.Namespace) -> int:
    report = _report(args)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(report.format())
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    report = _report(args)
    problems = report.problems
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
        applied = ", ".join("{} ({})".format(s.fix, s.implementation) for s in report.applied)
        print(
            "keepalive-guard check: ok, uvicorn {}: {}".format(
                report.versions["uvicorn"], "applied " + applied if applied else "nothing to fix"
            )
        )
    return EXIT_PROBLEM if problems else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .config import parse_fixes
    from .verify.runner import format_result, verify

    fixes = ",".join(parse_fixes(args.fixes)) or "none"
    result = verify(fixes)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_result(result))
    return EXIT_OK if result["ok"] else EXIT_PROBLEM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalive-guard",
        description="Backported uvicorn keep-alive fixes: what applies here, and is it applied.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeepaliveGuardError as exc:
        print("keepalive-guard: {}".format(exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
