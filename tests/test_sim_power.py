"""The simulator with a power planner on: the books balance, safety KPIs hold,
multi-day runs learn, the fixed schedule's day is unchanged."""

import pytest

from usher.planner.autoscale import Autoscale, Citrix
from usher.sim.day import simulate_day
from usher.sim.days import day_scenario, simulate_days
from usher.sim.scenario import Scenario


@pytest.fixture(scope="module")
def small():
    return Scenario().scaled(0.1).with_changes(day={"hours": 12.0, "policy": "vertical"},
                                               sessions={"warm_start": "settled"})


@pytest.mark.parametrize("faults", [False, True])
@pytest.mark.parametrize("cls", [Autoscale, Citrix])
def test_books_balance_with_the_planner_on(small, cls, faults):
    sc = small.with_changes(faults={"enabled": faults, "zone_outage_at": "09:00"})
    k = simulate_day(sc, power_policy=cls()).kpis
    assert k["books.mismatch"] == 0 and k["books.lost_unbooked"] == 0 and k["books.unexpected_decisions"] == 0
    assert k["power.forced_logoffs"] == 0
    assert k["logons.on_draining"] == 0
    assert k["power.shutdowns"] > 0 and k["power.boots"] > 0
    assert k["power.server_hours_lower_bound"] > 0
    assert k["power.server_hours"] >= k["power.server_hours_lower_bound"]
    if not faults:
        assert k["launches.rejected"] == 0


def test_autoscale_powers_less_than_the_fixed_schedule(small):
    fixed = simulate_day(small).kpis
    auto = simulate_day(small, power_policy=Autoscale()).kpis
    assert fixed["launches.rejected"] == 0 and auto["launches.rejected"] == 0
    assert auto["power.server_hours"] < fixed["power.server_hours"]
    assert auto["power.policy"] == "autoscale" and fixed["power.policy"] == "fixed"


def test_days_learn_and_add_up(small):
    sc = small.with_changes(day={"days": 3, "start_weekday": 4, "holidays": [2]})
    assert day_scenario(sc, 0)[1:] == (4, False)
    assert day_scenario(sc, 1)[0].demand.curve == sc.demand.weekend_curve
    assert day_scenario(sc, 2)[1:] == (6, True)
    pol = Autoscale()
    run = simulate_days(sc, power_policy=pol)
    assert len(run.days) == 3
    assert run.kpis["scenario.days"] == 3
    assert run.kpis["power.server_hours"] == pytest.approx(sum(d.kpis["power.server_hours"] for d in run.days),
                                                           abs=0.2)
    assert set(pol.forecast.profiles) == {"weekday", "weekend"}
    assert all(d.kpis["books.mismatch"] == 0 for d in run.days)


def test_one_day_run_is_the_day(small):
    a = simulate_days(small).kpis
    b = simulate_day(small).kpis
    drop = ("run.", "engine.seconds", "engine.launch_seconds", "engine.us_per")
    assert {k: v for k, v in a.items() if not k.startswith(drop)} == \
        {k: v for k, v in b.items() if not k.startswith(drop)}


@pytest.mark.parametrize("power", ["autoscale", "citrix"])
def test_a_settings_file_changes_only_its_keys_over_the_planners_defaults(tmp_path, power):
    from usher.cli.simulate import planner_settings
    from usher.planner.autoscale import autoscale_settings, citrix_settings

    path = tmp_path / "power.toml"
    path.write_text("[default]\nbuffer_pct = 7.5\n")
    got = planner_settings(power, path).default
    want = (citrix_settings() if power == "citrix" else autoscale_settings()).default
    assert got.buffer_pct == 7.5 and want.buffer_pct != 7.5
    for name in ("off_delay_from", "forecast", "trend", "place_last_pct", "failover", "hysteresis_pct"):
        assert getattr(got, name) == getattr(want, name), name


@pytest.mark.parametrize("planner", [None, Autoscale])
def test_the_auto_warm_start_settles_under_a_planner_and_spreads_under_the_schedule(small, planner):
    def day(warm):
        sc = small.with_changes(day={"hours": 1.0}, sessions={"warm_start": warm})
        r = simulate_day(sc, power_policy=planner() if planner else None)
        return {k: v for k, v in r.kpis.items() if not k.startswith(("run.", "engine."))}

    auto = day("auto")
    assert auto == day("settled" if planner else "spread")
    assert auto != day("spread" if planner else "settled")
