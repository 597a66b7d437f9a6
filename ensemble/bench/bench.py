"""`ensemble bench`: our stack against the plain alternatives, measured side by side in one run.

Run: `ensemble bench`. Its figures, and how long it takes, are in docs/performance.md.

Each comparison runs both sides back to back in every repeat and reports medians and the
ratio of medians, so a noisy shared machine moves both sides alike. Start-up (Ray, data
shipping, actor creation) is timed apart from training. Nothing is asserted: the table says
which targets were met and which were missed, with the measured figures.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from ensemble.bench.data_sizes import data_sizes_table, flatness, measure_data_sizes
from ensemble.bench.fit_overhead import fit_overhead, fit_overhead_line
from ensemble.bench.machine import machine_header
from ensemble.bench.serving import bench_run, measure_serving, serve_table
from ensemble.bench.tail import measure_tail, tail_table
from ensemble.builders import member_factory, member_rule, member_seed, train_settings
from ensemble.config import EagerConfig, EnsembleConfig, build_config
from ensemble.data import load_splits
from ensemble.scheduling.placement import Share
from ensemble.scheduling.pool import MemberPool, time_actor_start
from ensemble.scheduling.session import alive_node_resources, ray_session, share_data
from workers.actor import MemberSpec
from workers.events import EpochEnded, Event, Started
from workers.layout import member_name, write_atomic
from workers.memory_format import CONTIGUOUS
from workers.optimizers import TORCH_OPTIM
from workers.training import TrainSettings, apply_fast_paths, optimizer_for, train_one_epoch, validation_loss


def plain_member(factory: Callable, train_x, val_x, settings: TrainSettings, epochs: int) -> float:
    """The alternative to one member: the same model, data, batches and thread count in one
    process; no actor, no checkpoints, no progress; in PyTorch's default memory format, whatever
    `train.memory_format` chose for the members, so the comparison shows that choice's gain, and with
    torch.optim's own classes, as a plain loop builds them. Returns seconds."""
    settings = replace(settings, memory_format=CONTIGUOUS)
    torch.manual_seed(settings.seed)
    model, (train_x, val_x) = apply_fast_paths(factory(), (train_x, val_x), settings)
    optimizer = optimizer_for(model.parameters(), settings, TORCH_OPTIM)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    for _ in range(epochs):
        train_one_epoch(model, optimizer, train_x, settings, generator)
        validation_loss(model, val_x, settings.batch_size, settings.precision)
    return time.perf_counter() - started


class Observer:
    """on_event hook: when the first member started, and each actor process's peak resident
    (RSS) and unique (USS: not shared with the object store) memory, sampled every epoch.
    An actor trains several members one after another, so it is keyed by process id."""

    def __init__(self) -> None:
        self.first_started: float | None = None
        self.pids: dict[str, int] = {}
        self.peak_rss: dict[int, int] = defaultdict(int)
        self.peak_uss: dict[int, int] = defaultdict(int)

    def first_start(self) -> float:
        """When the first member started; asked after the pool trained, so one did."""
        assert self.first_started is not None, "no member started"
        return self.first_started

    def __call__(self, event: Event) -> None:
        match event:
            case Started(name=name, placement=placement):
                self.first_started = self.first_started or time.perf_counter()
                self.pids[name] = placement["pid"]
            case EpochEnded(name=name) if name in self.pids:
                self._sample(self.pids[name])

    def _sample(self, pid: int) -> None:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            return
        self.peak_rss[pid] = max(self.peak_rss[pid], info.rss)
        self.peak_uss[pid] = max(self.peak_uss[pid], info.uss)


def ours(specs: list[MemberSpec], data_ref) -> tuple[float, float, Observer]:
    """Seconds end to end (with the actors' start and warm-up), seconds from the first member's
    start to the end (training alone), and the observer."""
    observer = Observer()
    started = time.perf_counter()
    MemberPool(Share(1.0, 0.0), data_ref, observer).train(specs)
    ended = time.perf_counter()
    return ended - started, ended - observer.first_start(), observer


CEILING_SHARE = 0.85  # the measured end-to-end speed-up against the ceiling its own parts allow (issue 34)

# Many small members: scikit-learn's digits (800 training images), 2 epochs, no eager stop.
SMALL_MEMBERS = ["data.name=digits", "data.train_size=800", "data.val_size=300"]


def scheduling_cost(members: int, scratch: Path) -> tuple[float, float]:
    """Seconds of slot time per member not spent in its own training loop, once the actors are up
    (hand-over, events, the driver's writes): (wall from the first member's start x slots -
    member-seconds) / members; and the actors' start (process, imports, warm-up) before that."""
    config = build_config({}, SMALL_MEMBERS)
    splits = load_splits(config.data, config.seed)
    factory, stop = member_factory(config, splits.image_shape), member_rule(EagerConfig(rule="none"), 2)
    specs = [MemberSpec(member_name(i), str(scratch / member_name(i)), factory,
                        train_settings(config, member_seed(config.seed, i)), stop) for i in range(members)]
    observer, started = Observer(), time.perf_counter()
    runs = MemberPool(Share(1.0, 0.0), share_data(splits), observer).train(specs)
    ended = time.perf_counter()
    slots = min(members, int(sum(n.get("CPU", 0) for n in alive_node_resources())))
    outcomes = [run.outcome for run in runs.values() if run.outcome is not None]
    assert len(outcomes) == len(runs), "a member was lost: its slot time cannot be counted"
    training = sum(outcome.train_seconds for outcome in outcomes)
    return ((ended - observer.first_start()) * slots - training) / members, observer.first_start() - started


def comparison(name: str, ours_s: list[float], theirs_s: list[float], target: str, met: Callable[[float], bool],
               ratio_of: str = "ours/theirs") -> dict:
    ours_m, theirs_m = statistics.median(ours_s), statistics.median(theirs_s)
    ratio = ours_m / theirs_m if ratio_of == "ours/theirs" else theirs_m / ours_m
    return {"name": name, "ours_s": ours_s, "alternative_s": theirs_s, "ours_median": ours_m,
            "alternative_median": theirs_m, "ratio": ratio, "target": target, "met": met(ratio)}


def run_bench(config: EnsembleConfig, repeats: int, epochs: int, scratch: Path, log=print,
              small_counts: tuple[int, ...] = (5, 20)) -> dict:
    splits = load_splits(config.data, config.seed)
    samples: dict[str, list[float]] = defaultdict(list)
    memory: dict[str, dict] = {}
    for repeat in range(repeats):
        memory = _one_repeat(config, splits, epochs, scratch / f"repeat-{repeat}", samples, small_counts)
        log(f"  repeat {repeat + 1}/{repeats}: 1 member {samples['ours_one'][-1]:.1f}s vs plain "
            f"{samples['plain_one'][-1]:.1f}s; {config.members} members {samples['ours_many_end_to_end'][-1]:.1f}s "
            f"vs {samples['plain_many'][-1]:.1f}s one after another")
    return _summary(config, splits, repeats, epochs, samples, memory)


def _one_repeat(config: EnsembleConfig, splits, epochs: int, scratch: Path, samples: dict,
                small_counts: tuple[int, ...]) -> dict:
    """Every comparison once, each side right after the other; appends to `samples`, returns memory."""
    factory = member_factory(config, splits.image_shape)
    stop = member_rule(EagerConfig(rule="fixed", epoch=epochs), epochs)
    settings = [train_settings(config, member_seed(config.seed, i)) for i in range(config.members)]

    def specs(count: int, tag: str) -> list[MemberSpec]:
        return [MemberSpec(member_name(i), str(scratch / tag / member_name(i)), factory, settings[i], stop)
                for i in range(count)]

    # --- start-up: Ray, shipping the data once, one actor ready ---
    started = time.perf_counter()
    with ray_session(os.cpu_count()):
        samples["ray_init"].append(time.perf_counter() - started)
        started = time.perf_counter()
        data_ref = share_data(splits)
        samples["data_put"].append(time.perf_counter() - started)
        samples["actor_start"].append(time_actor_start(Share(1.0, 0.0), specs(1, "warm")[0], data_ref))

        # --- one member: our stack (epochs only) against a plain loop, same thread count ---
        _, one_s, one = ours(specs(1, "one"), data_ref)
        samples["ours_one"].append(one_s)
        torch.set_num_threads(1)
        samples["plain_one"].append(plain_member(factory, splits.train_x, splits.val_x, settings[0], epochs))

        # --- N members in parallel against the same N one after another ---
        many_s, many_training_s, many = ours(specs(config.members, "many"), data_ref)
        samples["ours_many"].append(many_training_s)
        samples["ours_many_end_to_end"].append(many_s)
        samples["plain_many"].append(sum(plain_member(factory, splits.train_x, splits.val_x, s, epochs)
                                         for s in settings))
        for count in small_counts:
            cost, start = scheduling_cost(count, scratch / f"small-{count}")
            samples[f"scheduling_cost_{count}"].append(cost)
            samples[f"scheduling_start_{count}"].append(start)
    return {"1": _memory(one), str(config.members): _memory(many)}


def _summary(config: EnsembleConfig, splits, repeats: int, epochs: int, samples: dict, memory: dict) -> dict:
    slots = min(config.members, os.cpu_count() or 1)
    rounds = -(-config.members // slots)  # whole members per slot: the last round may leave slots idle
    phases = zip(samples["ray_init"], samples["data_put"], samples["actor_start"], strict=True)
    startup = [sum(parts) for parts in phases]
    counts = sorted(int(key.rsplit("_", 1)[1]) for key in samples if key.startswith("scheduling_cost_"))
    return {
        "machine": machine_header(), "repeats": repeats, "epochs": epochs, "members": config.members,
        "train_images": len(splits.train_y),
        "comparisons": [
            comparison("member overhead: one member's epochs in our stack (actor, checkpoints, progress) / the "
                       "plain PyTorch loop (default memory format)", samples["ours_one"], samples["plain_one"],
                       "<= 0.75x", lambda r: r <= 0.75),
            comparison(f"parallel speed-up: {config.members} one after another / {config.members} in parallel "
                       "(training; start-up below)", samples["ours_many"], samples["plain_many"],
                       f">= {0.8 * slots:.1f}x", lambda r: r >= 0.8 * slots, ratio_of="theirs/ours"),
            comparison(f"parallel speed-up end to end: the same, with the {slots} actors' start and warm-up",
                       samples["ours_many_end_to_end"], samples["plain_many"], f">= {0.8 * slots:.1f}x",
                       lambda r: r >= 0.8 * slots, ratio_of="theirs/ours"),
        ],
        "schedule_bound": {"slots": slots, "rounds": rounds, "speedup": config.members / rounds},
        "end_to_end_bound": end_to_end_bound(samples, config.members, slots),
        "scheduling_cost_s": {count: statistics.median(samples[f"scheduling_cost_{count}"]) for count in counts},
        "scheduling_start_s": {count: statistics.median(samples[f"scheduling_start_{count}"]) for count in counts},
        "scheduling_cost_target_s": 0.15,
        "startup_s": {key: statistics.median(samples[key]) for key in ("ray_init", "data_put", "actor_start")},
        "startup_total_s": statistics.median(startup),
        "memory_mib": memory,
        "dataset_mib": round((splits.train_x.numel() + splits.val_x.numel()) * 4 / 2**20, 1),
        "driver_peak_rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
    }


def end_to_end_bound(samples: dict, members: int, slots: int) -> dict:
    """The best end-to-end time the measured parts allow: the actors start side by side (one per
    slot, each on its own core), then the members' training spreads perfectly over the slots with
    no scheduling cost. Its speed-up against the same members one after another is a ceiling."""
    start, member = statistics.median(samples["actor_start"]), statistics.median(samples["ours_one"])
    best = start + members * member / slots
    one_after_another = statistics.median(samples["plain_many"])
    ceiling = one_after_another / best
    bound = {"actor_start_s": start, "member_s": member, "best_s": best, "speedup": ceiling}
    if "ours_many_end_to_end" in samples:  # the measured end-to-end speed-up's share of the ceiling
        measured = one_after_another / statistics.median(samples["ours_many_end_to_end"])
        share = measured / ceiling
        bound |= {"measured_speedup": measured, "share": share, "share_target": CEILING_SHARE,
                  "share_met": share >= CEILING_SHARE}
    return bound


def _memory(observer: Observer) -> dict:
    def mib(values) -> list[float]:
        return [round(v / 2**20, 1) for v in values]
    return {"actors": len(observer.peak_rss), "actor_peak_rss_mib": mib(observer.peak_rss.values()),
            "actor_peak_uss_mib": mib(observer.peak_uss.values())}


def default_run_share(result: dict, output: Path, log=print) -> dict:
    """Start-up as a share of the default run's wall-clock (one default run, timed here)."""
    import ensemble
    started = time.perf_counter()
    report = ensemble.run(build_config({}, [f"output={output}", "name=bench-default"]), on_event=lambda e: None).report
    wall = time.perf_counter() - started
    log(f"  default run: {wall:.1f}s end to end")
    share = result["startup_total_s"] / wall
    from ensemble.analysis.curves import accuracy_vs_time
    curves = accuracy_vs_time(output / "bench-default")
    return {"time_to_accuracy": time_to_accuracy(curves.rows), "default_run_wall_s": wall, "startup_share": share,
            "startup_target": "<= 15%", "startup_met": share <= 0.15,
            "ensemble_wall_s": report.ensemble.wall_seconds, "baseline_wall_s": report.baseline.wall_seconds,
            "ensemble_accuracy": report.ensemble.test_accuracy, "baseline_accuracy": report.baseline.test_accuracy,
            "combiner_s": report.ensemble.combiner_seconds, "combiner_fit_s": report.ensemble.fit_seconds,
            "combiner_feature_s": report.ensemble.feature_seconds, "run_dir": str(output / "bench-default")}


def time_to_accuracy(rows) -> dict:
    """From accuracy-against-wall-clock rows (side, epoch, seconds, test_accuracy): when the
    ensemble first reaches the baseline's best accuracy, against when the baseline did; and
    each side's accuracy at the moment the ensemble finished training (equal wall-clock)."""
    ens = sorted((r for r in rows if r.side == "ensemble"), key=lambda r: r.seconds)
    base = sorted((r for r in rows if r.side == "baseline"), key=lambda r: r.seconds)
    best = max(r.test_accuracy for r in base)
    base_first = next(r.seconds for r in base if r.test_accuracy >= best)
    ens_first = next((r.seconds for r in ens if r.test_accuracy >= best), None)
    at = ens[-1].seconds
    base_then = [r.test_accuracy for r in base if r.seconds <= at]
    return {"baseline_best_accuracy": best, "baseline_seconds_to_best": base_first,
            "ensemble_seconds_to_baseline_best": ens_first, "equal_wallclock_s": at,
            "ensemble_accuracy_at_equal_wallclock": ens[-1].test_accuracy,
            "baseline_accuracy_at_equal_wallclock": base_then[-1] if base_then else None}


def table(result: dict) -> str:
    lines = [f"Machine: {result['machine']}",
             f"Medians of {result['repeats']} repeats; {result['members']} members x {result['epochs']} epochs on "
             f"{result['train_images']:,} training images; each side run back to back in every repeat.", "",
             "| comparison | ours (s) | alternative (s) | ratio | target | met |", "|---|---|---|---|---|---|"]
    for c in result["comparisons"]:
        lines.append(f"| {c['name']} | {c['ours_median']:.2f} | {c['alternative_median']:.2f} | {c['ratio']:.2f}x | "
                     f"{c['target']} | {'yes' if c['met'] else 'NO'} |")
    b = result["schedule_bound"]
    lines += ["", f"Whole members on {b['slots']} slots: {result['members']} members take {b['rounds']} rounds, a "
                  f"{b['speedup']:.2f}x bound on one thread each; idle actors lending their CPUs to the last members "
                  "(resources.lend_idle_cpus) is how a run gets past it."]
    e = result["end_to_end_bound"]
    lines += [f"Ceiling end to end from the measured parts: one actor's start {e['actor_start_s']:.2f}s + "
              f"{result['members']} x {e['member_s']:.2f}s of member training / {b['slots']} slots = "
              f"{e['best_s']:.2f}s, at most {e['speedup']:.2f}x against {result['members']} one after another "
              "(perfect packing, no scheduling cost)."
              + (f" Measured end to end {e['measured_speedup']:.2f}x: {e['share']:.0%} of it (target >= "
                 f"{e['share_target']:.0%}: {'met' if e['share_met'] else 'MISSED'})." if "share" in e else "")]
    cost, target = result["scheduling_cost_s"], result["scheduling_cost_target_s"]
    start = result["scheduling_start_s"]
    lines += ["Scheduling cost per member once the actors are up (slot seconds not spent training; many small "
              "members, digits, 2 epochs): " + ", ".join(f"{n} members {c:.3f}s" for n, c in cost.items())
              + f" (target < {target}s: {'met' if max(cost.values()) < target else 'MISSED'}); before that, the "
              "actors' start: " + ", ".join(f"{s:.2f}s" for s in start.values()) + " (a fixed cost per slot, "
              "amortised over the members each actor trains)"]
    s = result["startup_s"]
    lines += [f"Start-up (median): Ray {s['ray_init']:.2f}s + data shipping {s['data_put']:.3f}s + one actor "
                  f"started and warmed up {s['actor_start']:.2f}s = {result['startup_total_s']:.2f}s"]
    if "default" in result:
        d = result["default"]
        lines += [f"Start-up share of the default run ({d['default_run_wall_s']:.1f}s end to end): "
                  f"{d['startup_share']:.1%} (target {d['startup_target']}: {'met' if d['startup_met'] else 'MISSED'})",
                  f"Default run: ensemble {d['ensemble_accuracy']:.4f} in {d['ensemble_wall_s']:.1f}s, baseline "
                  f"{d['baseline_accuracy']:.4f} in {d['baseline_wall_s']:.1f}s; combiner {d['combiner_s']:.1f}s "
                  f"(features {d['combiner_feature_s']:.1f}s, fit {d['combiner_fit_s']:.1f}s)"]
        t = d["time_to_accuracy"]
        reached = (f"{t['ensemble_seconds_to_baseline_best']:.1f}s" if t["ensemble_seconds_to_baseline_best"]
                   is not None else "never")
        base_then = t["baseline_accuracy_at_equal_wallclock"]
        lines += [f"Time to the baseline's best test accuracy ({t['baseline_best_accuracy']:.4f}): baseline "
                  f"{t['baseline_seconds_to_best']:.1f}s, ensemble {reached} (training wall-clock, each side "
                  "from the start of its phase)",
                  f"At equal wall-clock ({t['equal_wallclock_s']:.1f}s, when the ensemble finished training): ensemble "
                  f"{t['ensemble_accuracy_at_equal_wallclock']:.4f}, baseline "
                  + (f"{base_then:.4f}" if base_then is not None else "no epoch finished yet")]
    lines += ["", f"Memory: dataset (train + validation, float32) {result['dataset_mib']} MiB, held once in Ray's "
                  f"object store; driver peak RSS {result['driver_peak_rss_mib']} MiB."]
    for n, m in result["memory_mib"].items():
        lines.append(f"  N={n} ({m['actors']} actor processes): peak RSS {m['actor_peak_rss_mib']} MiB, "
                     f"unique (USS) {m['actor_peak_uss_mib']} MiB")
    return "\n".join(lines)


def measure_and_report(overrides: list[str], repeats: int, epochs: int, output: Path, with_default_run: bool = True,
                       small_counts: tuple[int, ...] = (5, 20), estimator_fits: int = 3,
                       tail_members: tuple[int, ...] = (), tail_only: bool = False, tail_settings: tuple[str, ...] = (),
                       data_sizes: tuple[int, ...] = (), serve: bool = False, serve_run: Path | None = None,
                       serve_options: dict | None = None) -> dict:
    """Every measurement asked for, written to `output`/bench.json and printed as tables."""
    config = build_config({}, overrides)
    output.mkdir(parents=True, exist_ok=True)
    print(f"ensemble bench: {machine_header()}", flush=True)
    result: dict[str, Any] = {"machine": machine_header()}
    if not tail_only:
        result = run_bench(config, repeats, epochs, output / "scratch", small_counts=small_counts)
        if with_default_run:
            result["default"] = default_run_share(result, output)
        result["estimator_fit"] = fit_overhead(estimator_fits)
    if tail_members:
        result["tail"] = [measure_tail(n, output / "tail", tail_settings) for n in tail_members]
    if data_sizes:
        result["data_sizes"] = measure_data_sizes(data_sizes, output / "data-sizes", overrides)
        result["data_sizes_flatness"] = flatness(result["data_sizes"]) if len(data_sizes) > 1 else None
    if serve:
        result["serve"] = measure_serving(serve_run or bench_run(output), **(serve_options or {}))
    write_atomic(output / "bench.json", json.dumps(result, indent=2))
    if not tail_only:
        print(table(result))
        print(fit_overhead_line(result["estimator_fit"]))
    if "tail" in result:
        print(f"\n{tail_table(result['tail'])}")
    if data_sizes:
        print(f"\n{data_sizes_table(result['data_sizes'])}")
    if serve:
        print(f"\n{serve_table(result['serve'])}")
    print(f"\nJSON: {output / 'bench.json'}")
    return result
