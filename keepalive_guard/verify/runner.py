"""``keepalive-guard verify``: reproduce each applicable bug here, without and with the guard.

For every bug the installed release has (by the catalogue's release ranges)
on each installed implementation, start a server of the installed uvicorn
in a subprocess on 127.0.0.1, run the bug's scenario over several
connections at once, then do the same with the guard installed in the server
process.  Servers run concurrently; every one is stopped by its PID.
"""

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

from ..config import parse_fixes
from ..decide import version_decision
from ..fixes import CATALOGUE
from ..implementations import IMPLEMENTATIONS, distribution_version
from .scenarios import RUNS, SCENARIOS, TIMEOUT
from .server import Server

WORKERS = 4


def _websocket_library():
    for name in ("wsproto", "websockets"):
        if distribution_version(name) is not None:
            return name
    return None


def _implementations():
    found = []
    for impl in IMPLEMENTATIONS:
        if distribution_version(impl.library) is not None:
            found.append(impl.name)
    return found


def _measure(scenario, http, guard, ws, loop):
    """Connections (of RUNS) that showed the bug, or an error string."""
    try:
        with Server(
            http=http, guard=guard, timeout_keep_alive=TIMEOUT, ws=ws or "none", loop=loop
        ) as server:
            return scenario.count(server)
    except Exception as exc:  # a scenario that cannot run is a failed check, with why
        return "error: {}".format(exc).splitlines()[0]


def plan_rows(fixes: str, loop: str = "asyncio") -> "List[Dict[str, object]]":
    """One row per (scenario, implementation): runnable or why not."""
    version_text = distribution_version("uvicorn")
    ws = _websocket_library()
    selected = parse_fixes(fixes)
    installed = _implementations()
    rows = []
    for scenario in SCENARIOS:
        fix = CATALOGUE[scenario.bug]
        for http in scenario.implementations:
            row = {
                "bug": scenario.bug,
                "scenario": scenario.name,
                "upstream": fix.upstream,
                "implementation": http,
                "runs": RUNS,
                "why": "",
            }
            # What the version settles, as the guard decides it; the rest has the bug.
            decided = version_decision(fix, http, version_text, selected)
            hidden = scenario.unobservable.get((http, loop))
            if scenario.bug not in selected:
                row["why"] = "not selected ({!r})".format(fixes)
            elif version_text is None:
                row["why"] = "uvicorn is not installed"
            elif http not in installed:
                row["why"] = "{} is not installed".format(http)
            elif decided is not None:
                row["why"] = decided[1]
            elif hidden:
                row["why"] = hidden
            elif scenario.ws and ws is None:
                row["why"] = (
                    "no WebSocket library installed: uvicorn cannot upgrade, the bug cannot occur"
                )
            row["applies"] = not row["why"]
            row["unobservable"] = hidden is not None
            row["_scenario"], row["_ws"] = scenario, (ws if scenario.ws else None)
            rows.append(row)
    return rows


def verify(fixes: str = "all", loop: str = "asyncio") -> "Dict[str, object]":
    """Run every applicable scenario unguarded and guarded; the result as data."""
    rows = plan_rows(fixes, loop)
    jobs = []
    for row in rows:
        if row["applies"]:
            for guard in ("none", fixes):
                jobs.append((row, guard))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = pool.map(
            lambda job: _measure(
                job[0]["_scenario"], job[0]["implementation"], job[1], job[0]["_ws"], loop
            ),
            jobs,
        )
        for (row, guard), result in zip(jobs, list(results)):
            row["without" if guard == "none" else "with"] = result
    for row in rows:
        del row["_scenario"], row["_ws"]
        if row["applies"]:
            row["fixed"] = row["with"] == 0
            row["reproduced"] = isinstance(row["without"], int) and row["without"] > 0
    applicable = [row for row in rows if row["applies"]]
    return {
        "uvicorn": distribution_version("uvicorn"),
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "fixes": fixes,
        "loop": loop,
        "ok": all(row["fixed"] for row in applicable),
        "rows": rows,
    }


def format_result(result: "Dict[str, object]") -> str:
    lines = [
        "keepalive-guard verify: uvicorn {} on Python {}, {} loop".format(
            result["uvicorn"], result["python"], result["loop"]
        )
    ]
    header = ("bug", "impl", "scenario", "upstream", "without guard", "with guard")
    table = [header]
    for row in result["rows"]:
        if row["applies"]:
            without, with_ = row["without"], row["with"]
            table.append(
                (
                    row["bug"],
                    row["implementation"],
                    row["scenario"],
                    row["upstream"],
                    "{}/{} broken".format(without, row["runs"])
                    if isinstance(without, int)
                    else without,
                    (
                        "{}/{} broken".format(with_, row["runs"])
                        + (" FIXED" if with_ == 0 else " NOT FIXED")
                    )
                    if isinstance(with_, int)
                    else with_,
                )
            )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for r in table:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip())
    skipped = [row for row in result["rows"] if not row["applies"]]
    if skipped:
        lines.append("does not apply here:")
        for row in skipped:
            lines.append(
                "  {} {} ({}): {}".format(
                    row["bug"], row["implementation"], row["scenario"], row["why"]
                )
            )
    lines.append(
        "result: "
        + ("every applicable bug is fixed" if result["ok"] else "NOT every applicable bug is fixed")
    )
    return "\n".join(lines)
