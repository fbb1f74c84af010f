"""The main job: watch uvicorn's keep-alive bugs happen, then not happen.

    python3 compat/demo.py                    # uvicorn 0.12.2 (C, D, E, E2, R1-R5)
    python3 compat/demo.py --uvicorn 0.55.0   # any release from 0.2.2 to 0.55.0 (R1-R5)
    python3 compat/demo.py --uvicorn 0.3.26   # B, C, D, E, E2
    python3 compat/demo.py --uvicorn 0.2.5    # A
    python3 compat/demo.py --uvicorn 0.16.0 --python 3.6

Builds (or reuses) a uv environment with that uvicorn release, h11,
httptools, wsproto and this project's wheel, then runs
``keepalive-guard verify`` inside it: each bug the release has is reproduced
over 127.0.0.1 without the guard, then with it, the opt-in R4 too unless
``--fixes`` says otherwise.  Exits with verify's status.
Tooling (Python 3.9+, standard library only, plus uv which it installs).
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
import interpreters  # noqa: E402

DEFAULT_RELEASE = "0.12.2"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uvicorn", default=DEFAULT_RELEASE, help="release (default %(default)s)")
    parser.add_argument(
        "--python",
        default="{}.{}".format(*sys.version_info[:2]),
        help="3.X (default: this interpreter's minor; found on PATH or under pyenv)",
    )
    parser.add_argument(
        "--fixes", default="all,R4", help="fix selection for verify (default %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="verify's machine-readable output")
    args = parser.parse_args(argv)

    found = interpreters.find_interpreters()
    python = found.get(args.python, args.python)
    print(
        "building the environment: uvicorn {} on Python {} ...".format(args.uvicorn, args.python),
        flush=True,
    )
    wheel = envs.build_wheel(HERE.parent, HERE / ".work" / "dist")
    info = envs.build_env(args.uvicorn, python, wheel)
    installed = ", ".join("{} {}".format(k, v) for k, v in sorted(info["versions"].items()))
    print("installed in a fresh environment: {}\n".format(installed), flush=True)
    command = [info["python"], "-m", "keepalive_guard", "verify", "--fixes", args.fixes] + (
        ["--json"] if args.json else []
    )
    return subprocess.call(command, cwd=str(Path(info["python"]).parent), timeout=600)


if __name__ == "__main__":
    sys.exit(main())
