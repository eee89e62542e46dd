"""``make bench``: every figure of the performance issue, measured side by side in one run, in one table.

    python -m bench.run                 # everything (under 10 minutes on a 2-core machine)
    python -m bench.run --only a        # one part: a ingest, b e2e, c queue, d memory, e scaling, f scheduling, g WAIT
    python -m bench.run --only c.notifier --only d --quick   # sub-parts, and a fast smoke run

The table goes to stdout and, with every raw figure, to ``bench/results/latest.json``.
Targets are printed next to each figure with "met" / "NOT met"; a target not met does not fail the
run (exit code 0), a part that crashed does (exit code 1, its error in the JSON).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from bench import attendants, ingest, latency, memory, queue_scale, replication, schedule
from bench.loadgen import find_wrk, wrk_version
from bench.plan import Plan
from bench.recorder import RecorderClient, recorder
from bench.report import Row, format_table
from bench.stack import LOGS, local_system, log_path
from infra.platform.redis_server import find_redis_server

PARTS = {
    "a": "ingest: webhook vs bare function",
    "b": "end to end latency",
    "c": "queue at scale",
    "d": "memory",
    "e": "attendant scaling",
    "f": "scheduling",
    "g": "replication: WAIT's cost",
}
CONDITIONS = {
    "a": ingest.conditions,
    "b": latency.conditions,
    "c": queue_scale.conditions,
    "d": memory.conditions,
    "e": attendants.conditions,
    "f": schedule.conditions,
    "g": replication.conditions,
}
E2E_SLOTS = "512"  # more than (b)'s chats plus (e)'s, so nobody queues


def parse_only(only: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``("a", "c.notifier,d")`` -> {"a": (), "c": ("notifier",), "d": ()}; () means the whole part."""
    whole: set[str] = set()
    subs: dict[str, list[str]] = {}
    for token in ",".join(only).split(","):
        token = token.strip().lower()
        if not token:
            continue
        part, _, sub = token.partition(".")
        if part not in PARTS or (sub and (part != "c" or sub not in queue_scale.SUBPARTS)):
            names = ", ".join(f"c.{s}" for s in queue_scale.SUBPARTS)
            raise click.BadParameter(f"unknown part {token!r}; use {', '.join(PARTS)} or {names}", param_hint="--only")
        if sub:
            subs.setdefault(part, []).append(sub)
        else:
            whole.add(part)
    if not whole and not subs:
        return {p: () for p in PARTS}
    return {p: () if p in whole else tuple(subs[p]) for p in PARTS if p in whole or p in subs}


def machine() -> dict[str, object]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln), "")
    redis_v = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_v.strip(),
        "wrk": wrk_version() if shutil.which("wrk") else "not installed",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class Run:
    """Runs the chosen parts, sharing the WAHA stand-in and (for b and e) one running system."""

    def __init__(self, plan: Plan, chosen: dict[str, tuple[str, ...]], log: Callable[[str], None]) -> None:
        self.plan = plan
        self.chosen = chosen
        self.log = log
        self.figures: dict[str, object] = {}
        self.rows: list[Row] = []
        self.timings_s: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def part(self, name: str, fn: Callable[[], tuple[dict, list[Row]]]) -> None:
        self.log(f"({name}) {PARTS[name]} ...")
        started = time.monotonic()
        try:
            figures, rows = fn()
            self.figures[name] = figures
            self.rows += rows
        except Exception as e:  # one broken part must not hide the others' figures
            self.errors[name] = f"{type(e).__name__}: {e}"
            self.log(traceback.format_exc())
        self.timings_s[name] = round(time.monotonic() - started, 1)
        self.log(f"({name}) done in {self.timings_s[name]} s")

    def go(self) -> None:
        if "a" in self.chosen or "c" in self.chosen or "g" in self.chosen:
            find_wrk()
        with ExitStack() as stack:
            waha = stack.enter_context(recorder(log_path("recorder")))
            if "a" in self.chosen:
                self.part("a", lambda: ingest.run(self.plan))
            if "b" in self.chosen or "e" in self.chosen:
                with self._system(waha) as system:
                    if "b" in self.chosen:
                        self.part("b", lambda: latency.run(self.plan, system, waha))
                    if "e" in self.chosen:
                        self.part("e", lambda: attendants.run(self.plan, system, waha))
            if "c" in self.chosen:
                subs = self.chosen["c"] or queue_scale.SUBPARTS
                self.part("c", lambda: queue_scale.run(self.plan, waha, subs))
            if "d" in self.chosen:
                self.part("d", lambda: memory.run(self.plan, waha))
            if "f" in self.chosen:
                self.part("f", lambda: schedule.run(self.plan))
            if "g" in self.chosen:
                self.part("g", lambda: replication.run(self.plan))

    @contextmanager
    def _system(self, waha: RecorderClient) -> Iterator:
        started = time.monotonic()
        with local_system(waha.url, WSM_MAX_ACTIVE=E2E_SLOTS, WSM_TYPING_MS_PER_CHAR="0") as system:
            self.timings_s["system start"] = round(time.monotonic() - started, 1)
            yield system


@click.command()
@click.option("--only", multiple=True, help="Parts to run: a b c d e f g, or c.ingest c.admission c.notifier.")
@click.option("--quick", is_flag=True, help="A fast smoke run: tiny sizes and durations; figures mean little.")
@click.option("--json-out", type=click.Path(dir_okay=False), default="bench/results/latest.json", show_default=True)
def main(only: tuple[str, ...], quick: bool, json_out: str) -> None:
    """Run the benchmark and print one table."""
    chosen = parse_only(only)
    plan = Plan.smoke() if quick else Plan()
    shutil.rmtree(LOGS, ignore_errors=True)
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    info = machine()

    def log(line: str) -> None:
        click.echo(line, err=True)

    log(f"bench: parts {', '.join(chosen)}{' (quick)' if quick else ''}; logs in {LOGS}")
    run = Run(plan, chosen, log)
    run.go()
    info["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    wall = round(time.monotonic() - started, 1)
    rows = sorted(run.rows, key=lambda r: r.part)
    result = {
        "started_at": started_at,
        "quick": quick,
        "wall_s": wall,
        "timings_s": run.timings_s,
        "machine": info,
        "conditions": {p: CONDITIONS[p](plan) for p in chosen},
        "plan": asdict(plan),
        "parts": run.figures,
        "errors": run.errors,
        "rows": [r.as_dict() for r in rows],
    }
    out = Path(json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    click.echo(
        f"\nWSM benchmark, {started_at}, {info['cpus']} CPUs ({info['cpu_model']}), "
        f"load avg {info['load_avg_at_start']} -> {info['load_avg_at_end']}{', QUICK' if quick else ''}"
    )
    for p in chosen:
        click.echo(f"  ({p}) {CONDITIONS[p](plan)}")
    click.echo("")
    click.echo(format_table(rows))
    for p, error in run.errors.items():
        click.echo(f"({p}) FAILED: {error}")
    click.echo(f"\nwall time {wall} s ({', '.join(f'{k} {v} s' for k, v in run.timings_s.items())}); JSON: {out}")
    if run.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
