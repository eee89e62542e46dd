"""Where the CPU of part (b) goes: py-spy samples every process of the running system under (b)'s load.

    python -m bench.profile                 # 200 msg/s for 15 s, the top functions of each process
    python -m bench.profile --seconds 30 --top 25 --rate 250

The system is part (b)'s (``make local``'s processes, AOF always, no typing pause, enough slots); py-spy
(a dev dependency, needs ptrace: root or ``kernel.yama.ptrace_scope=0``) attaches to each gunicorn master
with ``--subprocesses`` and writes collapsed stacks under ``bench/results/profile/``, which any flame-graph
tool reads. The table gives, per process, its CPU ms per message (from /proc, as part (b) counts it) and
the functions with the most samples while holding the GIL (py-spy ``--gil``: Python at work, not a thread
blocked in a read): *self* (the function itself) and *total* (it or what it called, our code only). Redis's
``INFO commandstats`` before and after give the commands each message cost, by command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import click
import redis

from bench import latency
from bench.plan import Plan
from bench.recorder import recorder
from bench.run import E2E_SLOTS
from bench.stack import client_for, cpu_delta, local_system, log_path, system_cpu
from infra.platform.processes import BIN, REPO

OUT = Path("bench/results/profile")
PROFILED = ("webhook", "worker", "router", "notifier")


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not found:
        raise click.ClickException("py-spy is missing: make setup installs it (requirements-dev.txt)")
    return found


def frame_name(frame: str) -> str:
    """``handle (wsm/ingest/http.py:52)`` -> ``wsm/ingest/http.py:handle``; a library's path from site-packages on."""
    func, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", f"{REPO}/", f"python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{func}"


OURS = ("wsm/", "infra/", "functions/", "main.py:")


def summarize(collapsed: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self, top total of our own functions) from py-spy's raw (collapsed) output."""
    own, total, samples = Counter[str](), Counter[str](), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            if name.startswith(OURS):
                total[name] += count
    return samples, own.most_common(top), total.most_common(top)


def command_stats(client: redis.Redis) -> tuple[Counter[str], Counter[str]]:
    """Calls and microseconds (Redis's own accounting: a script's include the commands it called) by command."""
    stats = client.info("commandstats").items()
    calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats})
    return calls, Counter({name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats})


def redis_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the redis-server so far: fsync and socket work are system time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


@click.command()
@click.option("--seconds", default=15.0, show_default=True, help="Length of the profiled load.")
@click.option("--rate", default=200, show_default=True, help="Messages per second, as in part (b).")
@click.option("--top", default=15, show_default=True, help="Functions shown per process.")
def main(seconds: float, rate: int, top: int) -> None:
    """Profile part (b)'s pipeline and print where each process spends its CPU."""
    spy = py_spy()
    plan = Plan(e2e_rate_per_s=rate, e2e_duration_s=seconds)
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        recorder(log_path("recorder")) as waha,
        local_system(waha.url, WSM_MAX_ACTIVE=E2E_SLOTS, WSM_TYPING_MS_PER_CHAR="0") as system,
    ):
        waha.reset(0)
        latency.send_and_collect(plan, system.webhook_url, waha, plan.e2e_warmup_s)  # warm-up, not sampled
        spies: dict[str, subprocess.Popen] = {}
        for name in PROFILED:
            proc = system.processes[name].proc
            if proc is None:
                continue
            out = OUT / f"{name}.collapsed"
            argv = [spy, "record", "--pid", str(proc.pid), "--subprocesses", "--format", "raw", "--nonblocking",
                    "--rate", "250", "--gil", "--duration", str(int(seconds) + 3), "--output", str(out)]  # fmt: skip
            spies[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attached
        client = client_for(system.redis_url)
        redis_proc = system.redis_server.proc if system.redis_server else None  # None: a Redis not ours to watch
        cpu_before, split_before = system_cpu(system, waha.pid), redis_split(redis_proc.pid) if redis_proc else None
        calls, usec = command_stats(client)
        waha.reset(0)
        sent, _replies = latency.send_and_collect(plan, system.webhook_url, waha, seconds)
        cpu = cpu_delta(cpu_before, system_cpu(system, waha.pid))
        calls_after, usec_after = command_stats(client)
        commands, usec_by = calls_after - calls, usec_after - usec
        split = [a - b for a, b in zip(redis_split(redis_proc.pid), split_before, strict=True)] if redis_proc else []
        waha_calls = waha.calls()
        for proc in spies.values():
            proc.wait(timeout=seconds + 60)
    messages = max(1, len(sent))
    click.echo(f"profile of part (b): {len(sent):,} messages at {rate}/s; collapsed stacks in {OUT}/")
    click.echo("CPU ms per message: " + " | ".join(f"{n} {s * 1000 / messages:.2f}" for n, s in cpu.items()))
    per = ", ".join(f"{name} {n / messages:.2f}" for name, n in commands.most_common() if n > 0)
    click.echo(f"Redis commands per message: {commands.total() / messages:.1f} ({per})")
    top_usec = ", ".join(f"{name} {n / messages:.0f}" for name, n in usec_by.most_common(8) if n > 0)
    click.echo(f"Redis's own µs per message, by command (a script's include its commands): {top_usec}")
    if split:
        user_ms, system_ms = (seconds_ * 1000 / messages for seconds_ in split)
        click.echo(f"redis-server CPU ms per message: user {user_ms:.2f} | system {system_ms:.2f}")
    click.echo("WAHA calls per message: " + ", ".join(f"{k} {v / messages:.2f}" for k, v in waha_calls.items()))
    for name in spies:
        samples, own, total = summarize(OUT / f"{name}.collapsed", top)
        click.echo(f"\n== {name}: {samples:,} busy samples, {cpu.get(name, 0) * 1000 / messages:.2f} ms/msg")
        click.echo(f"  {'self %':>7}  function")
        for fn, n in own:
            click.echo(f"  {100 * n / max(1, samples):6.1f}%  {fn}")
        click.echo(f"  {'total %':>7}  our function (it and what it called)")
        for fn, n in total:
            click.echo(f"  {100 * n / max(1, samples):6.1f}%  {fn}")


if __name__ == "__main__":
    main()
