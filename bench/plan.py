"""How big and how long each part of the benchmark runs: the full plan (``make bench``) and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    # (a) ingest: wrk against the webhook and the bare function, alternately
    concurrency: tuple[int, ...] = (32, 128)
    wrk_duration_s: int = 10  # wrk takes whole seconds
    wrk_warmup_s: int = 2
    repeats: int = 2  # bare, webhook, bare, webhook: medians of these
    bodies_per_s: int = 8000  # bodies generated per second of a wrk run: more than either server answers
    # (b) end to end
    e2e_rate_per_s: int = 200
    e2e_duration_s: float = 30.0
    e2e_chats: int = 200
    e2e_warmup_s: float = 2.0
    # (c) queue at scale
    waiting: int = 100_000
    waiting_small: int = 2_000  # the notifier's cost is compared between this queue and ``waiting``
    admission_samples: int = 1000
    due_counts: tuple[int, ...] = (10, 100)
    # (d) memory
    memory_waiting_chats: int = 10_000
    memory_idle_chats: int = 1_000
    # (e) attendant scaling
    slots: tuple[int, ...] = (1, 4, 16, 32)
    scaling_duration_s: float = 10.0
    scaling_warmup_s: float = 2.0
    waha_delay_ms: int = 50
    # (f) scheduling
    schedule_providers: int = 10
    schedule_horizon_days: int = 60
    schedule_booked: int = 5_000
    schedule_searches: int = 500
    schedule_clients: int = 32
    schedule_rounds: int = 20

    @classmethod
    def smoke(cls) -> Plan:
        """A fast run of every part: checks the harness works, its figures mean little."""
        return cls(
            quick=True,
            wrk_duration_s=2,
            wrk_warmup_s=1,
            repeats=1,
            e2e_duration_s=3.0,
            e2e_warmup_s=0.5,
            waiting=2_000,
            waiting_small=500,
            admission_samples=100,
            due_counts=(10, 50),
            memory_waiting_chats=1_000,
            memory_idle_chats=50,
            slots=(1, 4),
            scaling_duration_s=3.0,
            scaling_warmup_s=1.0,
            schedule_booked=500,
            schedule_searches=50,
            schedule_rounds=2,
        )
