"""The benchmark runs and reports every figure; its timings are printed, never asserted."""

import json

import numpy as np
import pytest

from ensemble.analysis.curves import CurveRow
from ensemble.bench.bench import end_to_end_bound, measure_and_report, table, time_to_accuracy
from ensemble.bench.tail import BEFORE_40_S, tail_table, tail_verdict
from tests.tiny import TINY


def test_the_tail_table_states_the_target_and_the_growth():
    rows = [{"members": n, "tail_s": s, "feature_s": 0.1, "fit_s": s / 2, "wall_s": 10 * s, "test_accuracy": 0.9,
             "driver_peak_rss_mib": 900.0, "driver_tail_peak_rss_mib": 800.0} for n, s in ((5, 3.0), (20, 6.0),
                                                                                          (40, 11.0))]
    verdict = tail_verdict(rows)
    assert verdict["share_of_before_40"] == pytest.approx(11.0 / BEFORE_40_S) and verdict["share_met"]
    assert verdict["growth_20_to_40"] == pytest.approx(11.0 / 6.0) and verdict["growth_met"]
    printed = tail_table(rows)
    assert "| 40 | 11.0 |" in printed and "met" in printed and "MISSED" not in printed
    rows[2]["tail_s"] = 13.0  # more than twice N=20's tail: growth worse than linear
    assert not tail_verdict(rows)["growth_met"] and "MISSED" in tail_table(rows)


def test_the_end_to_end_ceiling_is_one_start_plus_the_members_spread_over_the_slots():
    samples = {"actor_start": [2.0, 3.0, 2.5], "ours_one": [3.0, 3.2, 2.8], "plain_many": [16.0, 17.0, 15.0]}
    bound = end_to_end_bound(samples, members=5, slots=2)
    assert bound["best_s"] == pytest.approx(2.5 + 5 * 3.0 / 2) and bound["speedup"] == pytest.approx(16.0 / 10.0)
    assert "share" not in bound  # no end-to-end measurement: nothing to set against the ceiling


def test_the_measured_end_to_end_speed_up_is_checked_against_its_ceiling():
    samples = {"actor_start": [2.0], "ours_one": [3.0], "plain_many": [16.0], "ours_many_end_to_end": [12.5]}
    bound = end_to_end_bound(samples, members=5, slots=2)  # ceiling 16 / 9.5, measured 16 / 12.5: 76% of it
    assert bound["measured_speedup"] == pytest.approx(1.28) and bound["share"] == pytest.approx(9.5 / 12.5)
    assert not bound["share_met"]
    met = end_to_end_bound(samples | {"ours_many_end_to_end": [11.0]}, members=5, slots=2)  # 86% of it
    assert met["share"] == pytest.approx(9.5 / 11.0) and met["share_met"]


def test_time_to_accuracy_reads_the_curves():
    rows = [CurveRow("ensemble", 1, 10.0, 0.90), CurveRow("ensemble", 2, 20.0, 0.95),
            CurveRow("baseline", 1, 8.0, 0.85), CurveRow("baseline", 2, 16.0, 0.93),
            CurveRow("baseline", 3, 40.0, 0.94)]
    t = time_to_accuracy(rows)
    assert t["baseline_best_accuracy"] == 0.94 and t["baseline_seconds_to_best"] == 40.0
    assert t["ensemble_seconds_to_baseline_best"] == 20.0
    assert t["equal_wallclock_s"] == 20.0 and t["baseline_accuracy_at_equal_wallclock"] == 0.93


def test_the_mirror_benchmark_replays_a_run_with_both_pushes(tmp_path):
    from benchmarks.mirror_push import EPOCHS, replay
    walk, changed = (replay(2, walk, tmp_path / f"run-{walk}") for walk in (True, False))
    assert walk["events"] == changed["events"] == 2 * (EPOCHS + 2)
    assert walk["files"] == changed["files"] == 2 * ((EPOCHS + 1) * 3 + 3)  # checkpoints, history, progress, outcome
    assert all(run["total"] > 0 for run in (walk, changed))


def test_the_stand_in_data_is_mnist_5k_then_copies_shifted_by_at_most_two_pixels():
    from ensemble.bench.data_sizes import shifted_digits
    from ensemble.data.sources import mnist_5k_arrays
    original, labels = mnist_5k_arrays()
    original = original.reshape(-1, 28, 28)
    images, y = shifted_digits(len(original) + 40)
    assert images.shape == (len(original) + 40, 28, 28) and images.dtype == "uint8" and len(y) == len(images)
    assert (images[:len(original)] == original).all() and (y[:len(original)] == labels).all()
    shifts = range(-2, 3)
    for row in range(len(original), len(images)):
        source = original[row % len(original)]
        assert y[row] == labels[row % len(original)]
        assert any((images[row] == np.roll(source, (a, b), axis=(0, 1))).all() for a in shifts for b in shifts)
    assert (images[len(original):] != original[:40]).any()  # the copies did move


def size_row(images, member_s, driver, tail=1.0):
    return {"train_images": images, "member_seconds_per_1000_images": member_s,
            "baseline_seconds_per_1000_images": None, "feature_seconds": 0.5, "fit_seconds": 1.0,
            "tail_seconds": tail, "tail_share_of_member_training": tail / 20, "driver_peak_rss_mib": driver,
            "actor_peak_rss_mib": [300.0, 310.0], "object_store_peak_mib": 12.5,
            "dataset_float32_mib": images * 784 * 4 * 1.25 / 2**20}


def test_data_sizes_flatness_compares_the_largest_size_with_the_smallest():
    from ensemble.bench.data_sizes import data_sizes_table, flatness
    rows = [size_row(3000, 2.0, 1000.0), size_row(12000, 2.6, 1200.0, tail=3.0)]
    assert flatness(rows)["driver_rise_growth_mib"] is None  # entries from before the rise was measured
    rows[0]["driver_rise_mib"], rows[1]["driver_rise_mib"] = 150.0, 190.0
    f = flatness(rows)
    assert f["member_per_1000_ratio"] == pytest.approx(1.3) and f["baseline_per_1000_ratio"] is None
    assert f["driver_growth_mib"] == 200.0 and f["data_growth_mib"] == pytest.approx(9000 * 784 * 5 / 2**20)
    assert f["tail_share_at_largest"] == pytest.approx(0.15)
    printed = data_sizes_table(rows)
    assert "| 12,000 | 2.60 | - | 0.5 | 1.0 | - | 3.0 |" in printed and "1.30x (target <= 1.2x)" in printed
    rows[1]["baseline_combiner_seconds"] = 0.25
    assert "| 12,000 | 2.60 | - | 0.5 | 1.0 | 0.2 | 3.0 |" in data_sizes_table(rows)
    assert f["driver_rise_growth_mib"] == 40.0 and "its start: +40 MiB" in printed


def test_bench_data_sizes_are_a_comma_separated_list():
    import argparse

    from ensemble.bench.command import sizes
    assert sizes("3000,12000, 48000") == (3000, 12000, 48000)
    for bad in ("3k", "", "50"):
        with pytest.raises(argparse.ArgumentTypeError):
            sizes(bad)


@pytest.mark.slow
def test_data_sizes_measure_each_cost_per_size(ray_instance, tmp_path):
    from ensemble.bench.data_sizes import measure_data_sizes
    rows = measure_data_sizes((200, 400), tmp_path, ["model.channels=[4, 8]"], log=lambda *a, **k: None)
    assert [r["train_images"] for r in rows] == [200, 400] and [r["val_images"] for r in rows] == [50, 100]
    for r in rows:
        assert r["member_seconds_per_1000_images"] > 0 and r["baseline_seconds_per_1000_images"] > 0
        assert r["tail_seconds"] > 0 and r["fit_seconds"] > 0 and r["driver_peak_rss_mib"] > 0
        assert r["baseline_combiner_seconds"] > 0
        assert 0 <= r["driver_rise_mib"] <= r["driver_peak_rss_mib"]
        assert r["head_tolerance"] == 1e-4  # the logistic head's lbfgs tolerance at these few rows
        assert len(r["actor_peak_rss_mib"]) >= 1 and all(v > 0 for v in r["actor_peak_rss_mib"])
    assert json.loads((tmp_path / "data_sizes.json").read_text()) == rows  # kept as each size finished


# --- the bench and the device check: last in this file, since they stop the session's Ray ---

@pytest.fixture(scope="module")
def session_ray_stopped(ray_instance):
    """The bench and the device check start and stop Ray instances of their own, as a user's command
    would: the session's is stopped once for both (they run last in this module) and started again after."""
    ray_instance.shutdown()
    yield
    ray_instance.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.mark.slow
def test_bench_reports_every_comparison_and_memory(session_ray_stopped, tmp_path):
    result = measure_and_report(["members=2", "data.name=digits", "data.train_size=100", "data.val_size=50",
                                 "model.channels=[4, 8]"], repeats=1, epochs=1, output=tmp_path,
                                with_default_run=False, small_counts=(4,), estimator_fits=2, tail_members=(2,),
                                tail_settings=TINY)
    names = [c["name"] for c in result["comparisons"]]
    assert any("member overhead" in n for n in names) and any("parallel speed-up" in n for n in names)
    assert all(c["ours_median"] > 0 and c["alternative_median"] > 0 for c in result["comparisons"])
    two = result["memory_mib"]["2"]  # one actor may train both members, one after the other
    assert set(result["memory_mib"]) == {"1", "2"} and 1 <= two["actors"] <= 2 and len(result["comparisons"]) == 3
    assert len(two["actor_peak_uss_mib"]) == two["actors"] and result["schedule_bound"]["rounds"] == 1
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert set(result["scheduling_cost_s"]) == {4} and all(s > 0 for s in result["scheduling_start_s"].values())
    printed = table(result)
    assert "Machine:" in printed and all(c["name"] in printed for c in result["comparisons"])
    assert "Ceiling end to end" in printed and result["end_to_end_bound"]["best_s"] > 0
    assert "of it (target >= 85%:" in printed and 0 < result["end_to_end_bound"]["share"]
    assert all(len(c["ours_s"]) == len(c["alternative_s"]) == 1 for c in result["comparisons"])
    fits = result["estimator_fit"]  # the estimator's per-fit overhead: 2 fits sharing one Ray start
    assert len(fits["fits"]) == 2 and fits["ray_start_s"] > 0 and fits["ratio"] > 1
    assert fits["later_fit_s"] == fits["fits"][1]["fit_s"]
    [tail] = result["tail"]  # one run of 2 members: its tail, the driver's memory, its accuracy
    assert tail["members"] == 2 and 0 < tail["tail_s"] < tail["wall_s"] and tail["test_accuracy"] > 0.5
    assert tail["feature_s"] < 0.5  # the members' actors encoded; the driver only stacked
    assert tail["driver_peak_rss_mib"] >= tail["driver_tail_peak_rss_mib"] > 0


@pytest.mark.slow
def test_the_device_check_runs_its_cpu_smoke_version(session_ray_stopped, tmp_path):
    """benchmarks/device_check.py, run here as it runs on a GPU machine but tiny and on the CPU, so the
    one prepared device script cannot rot between the sessions that have a GPU."""
    from benchmarks.device_check import main as device_check
    result = device_check(tmp_path, quick=True)  # it starts and stops its own Ray instances, as on the GPU machine
    assert {row["way"] for row in result["members_on_one_device"]} == {"one after another", "packed", "Ray actors"}
    assert result["default_runs"]["cpu-2-cores"]["ensemble_accuracy"] > 0.5
    assert (tmp_path / "device_check.md").read_text().startswith("Machine: ")
    assert json.loads((tmp_path / "device_check.json").read_text())["cpu_scaling"]["members"] == 2
