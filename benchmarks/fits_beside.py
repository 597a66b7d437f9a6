"""The run's combiner fits in the driver against beside the features (`ensemble.scheduling.beside`).

A finished run's selected and untrained checkpoints are encoded once; then `score_run` (the ensemble's
head, the untrained reference's and each member's own head, side by side) runs alternately in this
process, as the driver ran it before, and in the fits' own process on the same features put into the
object store as the members' actors send them. Prints each repeat's seconds (the call as the driver
waits for it), the ratio of the medians, and whether the predictions agree exactly.

Run: PYTHONPATH=<checkout> python benchmarks/fits_beside.py RUN_DIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import ray

from ensemble.runs.evaluation import score_run
from ensemble.runs.saved_run import open_run
from ensemble.scheduling.beside import FitsBeside
from ensemble.scheduling.session import share_data
from workers.encoding import encode_checkpoints
from workers.events import Done, Shipment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    saved = open_run(args.run_dir)  # the run's factories and splits, as `ensemble select` reads them
    splits = saved.splits()
    chosen = [(m.name, m.selected_epoch) for m in saved.report.members if m.selected_epoch is not None]
    factories = saved.factories(chosen)
    images = {"train": splits.labelled_x, "test": splits.test_x}
    encoded = {name: encode_checkpoints(factories[name], args.run_dir / name, [epoch, 0], images)
               for name, epoch in chosen}
    combiner, seed = saved.config.combiner, saved.config.seed
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    fits = FitsBeside(share_data(splits))
    shipments = {name: ray.put(Shipment(Done(name, 0.0, None), {}, features))  # type: ignore[arg-type]
                 for name, features in encoded.items()}
    fits(score_run, splits.test_y, shipments, factories, args.run_dir, chosen, combiner, seed)  # its imports
    seconds: dict[str, list[float]] = {"driver": [], "beside": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        here = score_run(factories, args.run_dir, chosen, splits, combiner, seed, encoded)
        seconds["driver"].append(time.perf_counter() - started)
        started = time.perf_counter()
        there = fits(score_run, splits.test_y, shipments, factories, args.run_dir, chosen, combiner, seed)
        seconds["beside"].append(time.perf_counter() - started)
        same = np.array_equal(here.ensemble.test_predictions, there.ensemble.test_predictions) and all(
            np.array_equal(a, b) for a, b in zip(here.alone, there.alone, strict=True))
        print(f"driver {seconds['driver'][-1]:.2f} s, beside {seconds['beside'][-1]:.2f} s, "
              f"same predictions: {same}", flush=True)
    ratio = statistics.median(seconds["beside"]) / statistics.median(seconds["driver"])
    print(f"median: driver {statistics.median(seconds['driver']):.2f} s, beside "
          f"{statistics.median(seconds['beside']):.2f} s ({ratio:.2f}x)")
    ray.shutdown()


if __name__ == "__main__":
    main()
