"""(f) Scheduling: free-slot search over a busy 60-day horizon, and hold+confirm under contention.

A fresh redis-server (AOF ``appendfsync always``, what we ship); a schedule of 10 providers open
Mon-Sat 08:00-18:00 (30-minute consultations, BR/SP holidays), the clock fixed on a Monday 07:00.

- search: ``plan.schedule_booked`` appointments are booked through the real scripts (hold + confirm,
  one chat each) at random free slots; then ``Book.slots`` (limit 10) is timed for random questions:
  any provider or one, from today or a random later day.
- contention: ``plan.schedule_clients`` threads (own connection each, one chat each) fight over 10
  slots per round, each trying hold + confirm on every slot of the round in its own random order;
  every round must end with exactly 10 booked. Script calls/s count every hold and confirm answered.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import redis

from bench.plan import Plan
from bench.report import Row, num, percentile
from bench.stack import client_for, private_redis
from wsm.schedule.availability import free_slots
from wsm.schedule.book import Book
from wsm.schedule.config import Schedule, parse_schedule
from wsm.schedule.errors import BookingError

SESSION = "bench-schedule"
NOW = datetime(2027, 2, 1, 7, 0)  # a Monday, local time
TARGET_SEARCH_P50_MS = 20.0
TARGET_SEARCH_P99_MS = 50.0
TARGET_CALLS_PER_S = 1000.0


def bench_schedule(providers: int, horizon_days: int) -> Schedule:
    hours = {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
    return parse_schedule(
        {
            "business": {"name": "Bench"},
            "timezone": "America/Sao_Paulo",
            "holidays": {"country": "BR", "subdiv": "SP"},
            "horizon_days": horizon_days,
            "max_future_per_person": 1_000_000,
            "services": [{"id": "consulta", "name": "Consulta", "duration_min": 30}],
            "providers": [
                {"id": f"p{i:02d}", "name": f"Provider {i}", "services": ["consulta"], "hours": hours}
                for i in range(providers)
            ],
        },
        "<bench>",
    )


def seed(book: Book, booked: int, rng: random.Random) -> int:
    now = datetime.fromtimestamp(book.clock() / 1000, UTC)
    every = free_slots(book.schedule, "consulta", now, {}, limit=1_000_000)
    for i, slot in enumerate(rng.sample(every, min(booked, len(every)))):
        chat = f"55119{i:08d}@c.us"
        book.confirm(book.hold(slot.slot_id, chat, f"seed-h-{i}").id, chat, f"seed-c-{i}")
    return len(every)


def search(book: Book, searches: int, rng: random.Random) -> list[float]:
    today = datetime.fromtimestamp(book.clock() / 1000, UTC).astimezone(book.schedule.tz).date()
    providers = sorted(book.schedule.providers)
    took: list[float] = []
    for _ in range(searches):
        provider = rng.choice([None, rng.choice(providers)])
        day = today + timedelta(days=rng.randrange(book.schedule.horizon_days)) if rng.random() < 0.5 else None
        started = time.perf_counter()
        found = book.slots("consulta", provider=provider, date_from=day, limit=10)
        took.append((time.perf_counter() - started) * 1000)
        assert found, "a search found nothing"
    return took


def contend(url: str, schedule: Schedule, clock_ms: int, clients: int, rounds: int) -> dict:
    base = Book(client_for(url), schedule, SESSION, clock=lambda: clock_ms)
    # contested slots: on the last days of the horizon (not touched by the seeding's search questions)
    pool = base.slots("consulta", limit=1_000_000)
    pool = pool[-rounds * 10 :]
    booked_per_round: list[int] = []
    calls = [0] * clients
    elapsed = 0.0
    for r in range(rounds):
        slots = [s.slot_id for s in pool[r * 10 : r * 10 + 10]]
        won = [0] * clients
        barrier = threading.Barrier(clients + 1)

        def client(
            i: int, slots: list[str] = slots, won: list[int] = won, r: int = r, barrier: threading.Barrier = barrier
        ) -> None:
            conn = redis.Redis.from_url(url, decode_responses=True)
            book = Book(conn, schedule, SESSION, clock=lambda: clock_ms)
            order = random.Random(r * 1000 + i).sample(slots, len(slots))
            chat = f"55118{i:08d}@c.us"
            barrier.wait()
            for n, slot in enumerate(order):
                try:
                    held = book.hold(slot, chat, f"c-{r}-{i}-{n}-h")
                    calls[i] += 1
                    book.confirm(held.id, chat, f"c-{r}-{i}-{n}-c")
                    won[i] += 1
                except BookingError:
                    pass
                calls[i] += 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        elapsed += time.perf_counter() - started
        booked_per_round.append(sum(won))
    return {
        "clients": clients,
        "rounds": rounds,
        "booked_per_round": booked_per_round,
        "script_calls": sum(calls),
        "calls_per_s": round(sum(calls) / elapsed, 1),
        "bookings_per_s": round(sum(booked_per_round) / elapsed, 1),
        "exactly_10_every_round": all(n == 10 for n in booked_per_round),
    }


def run(plan: Plan) -> tuple[dict, list[Row]]:
    rng = random.Random(11)
    schedule = bench_schedule(plan.schedule_providers, plan.schedule_horizon_days)
    clock_ms = int(NOW.replace(tzinfo=schedule.tz).timestamp() * 1000)
    with private_redis() as server:
        client = client_for(server.url)
        book = Book(client, schedule, SESSION, clock=lambda: clock_ms)
        started = time.perf_counter()
        candidates = seed(book, plan.schedule_booked, rng)
        seed_s = time.perf_counter() - started
        took = search(book, plan.schedule_searches, rng)
        fight = contend(server.url, schedule, clock_ms, plan.schedule_clients, plan.schedule_rounds)
        client.close()
    p50, p99 = percentile(took, 50), percentile(took, 99)
    figures = {
        "candidate_slots": candidates,
        "booked": plan.schedule_booked,
        "seed_s": round(seed_s, 2),
        "seed_bookings_per_s": round(plan.schedule_booked / seed_s, 1),
        "search_ms": {"p50": round(p50, 2), "p99": round(p99, 2), "max": round(max(took), 2), "n": len(took)},
        "contention": fight,
    }
    side = f"{plan.schedule_providers} providers, {plan.schedule_booked:,} booked of {candidates:,} slots"
    rows = [
        Row(
            "f",
            "slot search p50 (limit 10)",
            f"{num(p50, 2)} ms; {side}",
            f"<= {TARGET_SEARCH_P50_MS:g} ms",
            p50 <= TARGET_SEARCH_P50_MS,
        ),
        Row(
            "f",
            "slot search p99",
            f"{num(p99, 2)} ms; {len(took)} searches",
            f"<= {TARGET_SEARCH_P99_MS:g} ms",
            p99 <= TARGET_SEARCH_P99_MS,
        ),
        Row(
            "f",
            "booking (hold + confirm), one client",
            f"{num(figures['seed_bookings_per_s'])} bookings/s while seeding",
        ),
        Row(
            "f",
            f"contention: {fight['clients']} clients, 10 slots x {fight['rounds']} rounds",
            f"{num(fight['calls_per_s'])} script calls/s, {num(fight['bookings_per_s'])} bookings/s",
            f">= {TARGET_CALLS_PER_S:g} calls/s",
            fight["calls_per_s"] >= TARGET_CALLS_PER_S,
        ),
        Row(
            "f",
            "  exactly 10 booked per round",
            f"booked per round: min {min(fight['booked_per_round'])}, max {max(fight['booked_per_round'])}",
            "10 every round",
            fight["exactly_10_every_round"],
        ),
    ]
    return figures, rows


def conditions(plan: Plan) -> str:
    return (
        f"fresh Redis (AOF always); {plan.schedule_providers} providers Mon-Sat 08-18, "
        f"{plan.schedule_horizon_days}-day horizon, {plan.schedule_booked:,} booked; "
        f"{plan.schedule_searches} searches; {plan.schedule_clients} client threads x "
        f"{plan.schedule_rounds} rounds of 10 contested slots"
    )
