"""The CPU budget arithmetic benchmarks/load.py prints beside the sandbox comparison (benchmarks/budget.py).

Collected by the project's pytest run (testpaths); pytest puts this folder on sys.path, as running a script from
it does, so it imports its neighbour by plain name like the other scripts here.
"""

import pytest

from budget import Cost, budget, describe


def test_cost_per_cycle_is_cores_over_cycles() -> None:
    cost = Cost(cycles_per_s=800, server_cores=1.0, loadgen_cores=0.6)
    assert cost.server_ms == pytest.approx(1.25)
    assert cost.loadgen_ms == pytest.approx(0.75)
    assert Cost(0, 1.0, 1.0).server_ms == float("inf")


def test_target_that_does_not_fit_the_machine() -> None:
    # 10x a sandbox at 150 cycles/s is 1,500; at 1.25 + 0.75 ms per cycle that is 3 cores of CPU.
    result = budget(Cost(800, 1.0, 0.6), sandbox_cycles_per_s=150, cores=2)
    assert result.target_cycles_per_s == 1500
    assert result.cores_at_broker_cost == pytest.approx(3.0)
    assert not result.fits
    assert result.broker_ms_allowed is None
    assert "does not fit" in describe(result)


def test_target_that_fits() -> None:
    result = budget(Cost(800, 1.0, 0.6), sandbox_cycles_per_s=50, cores=2)
    assert result.cores_at_broker_cost == pytest.approx(1.0)
    assert result.fits


def test_ceiling_sets_what_is_left_for_the_broker() -> None:
    # The bare server's run: Locust spent 0.5 ms per cycle there (less than the 0.75 against the broker), so at
    # 1,500 cycles/s it takes 0.75 of 2 cores and leaves 1.25 cores: 0.83 ms per cycle, 67 % of 1.25 ms.
    ceiling = Cost(cycles_per_s=2000, server_cores=0.4, loadgen_cores=1.0)
    result = budget(Cost(800, 1.0, 0.6), sandbox_cycles_per_s=150, cores=2, ceiling=ceiling)
    assert result.loadgen_ms_floor == pytest.approx(0.5)
    assert result.broker_ms_allowed == pytest.approx(1250 / 1500)
    assert "67% of what it uses now" in describe(result)


def test_nothing_left_is_zero_not_negative() -> None:
    ceiling = Cost(cycles_per_s=1000, server_cores=0.4, loadgen_cores=1.0)  # 1 ms per cycle for Locust alone
    result = budget(Cost(800, 1.0, 0.9), sandbox_cycles_per_s=300, cores=2, ceiling=ceiling)
    assert result.broker_ms_allowed == 0.0
