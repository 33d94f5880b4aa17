"""CPU budget arithmetic for a throughput target on the machine that ran the load test.

Locust and the server under test share this machine's cores, so a throughput target is also a CPU budget: at
T message cycles a second, the load generator and the server together may spend at most cores / T seconds of
CPU per cycle. load.py measures what each of them spends per cycle in the same run; this module turns those
measurements into what a target (10x the sandbox's cycles) would take, and what it would leave the broker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """What one run spent: message cycles a second, and the cores (CPU seconds per second of wall clock) that the
    server and the load generator used meanwhile."""

    cycles_per_s: float
    server_cores: float
    loadgen_cores: float

    @property
    def server_ms(self) -> float:
        """Server CPU milliseconds per message cycle."""
        return 1000 * self.server_cores / self.cycles_per_s if self.cycles_per_s else float("inf")

    @property
    def loadgen_ms(self) -> float:
        """Load generator CPU milliseconds per message cycle."""
        return 1000 * self.loadgen_cores / self.cycles_per_s if self.cycles_per_s else float("inf")


@dataclass(frozen=True)
class Budget:
    target_cycles_per_s: float
    cores: int
    #: Cores the target takes at the broker run's own costs (broker + its load generator).
    cores_at_broker_cost: float
    broker_ms_now: float
    #: With a ceiling run: the cheapest load generator cost per cycle seen, and the broker CPU per cycle that
    #: the target leaves once the load generator has had that much (never below 0).
    loadgen_ms_floor: float | None = None
    broker_ms_allowed: float | None = None

    @property
    def fits(self) -> bool:
        return self.cores_at_broker_cost <= self.cores


def budget(
    broker: Cost, sandbox_cycles_per_s: float, cores: int, ceiling: Cost | None = None, factor: float = 10
) -> Budget:
    """The budget for `factor` times the sandbox's cycles; `ceiling` is the bare server's run, if there was one."""
    target = factor * sandbox_cycles_per_s
    needed = target * (broker.server_ms + broker.loadgen_ms) / 1000
    floor = allowed = None
    if ceiling is not None:
        # The cheaper of the two load generator costs, which is the kinder one to the broker: Locust spends less
        # per request on a server whose answers are shorter.
        floor = min(ceiling.loadgen_ms, broker.loadgen_ms)
        allowed = max(0.0, (cores - target * floor / 1000) * 1000 / target) if target else float("inf")
    return Budget(target, cores, needed, broker.server_ms, floor, allowed)


def describe(result: Budget, factor: float = 10) -> str:
    lines = [
        f"budget: {factor:g}x the sandbox is {result.target_cycles_per_s:,.0f} cycles/s; at this run's CPU per cycle "
        f"(broker {result.broker_ms_now:.2f} ms + load generator) that takes {result.cores_at_broker_cost:.2f} "
        f"of {result.cores} cores" + (" (fits)" if result.fits else " (does not fit)")
    ]
    if result.loadgen_ms_floor is not None and result.broker_ms_allowed is not None:
        share = 100 * result.broker_ms_allowed / result.broker_ms_now if result.broker_ms_now else float("nan")
        lines.append(
            f"        the load generator alone needs at least {result.loadgen_ms_floor:.2f} ms per cycle, which "
            f"leaves the broker {result.broker_ms_allowed:.2f} ms per cycle ({share:.0f}% of what it uses now), "
            "all cores counted"
        )
    return "\n".join(lines)
