"""Send a run's progress to your own experiment tracker with `ensemble.run(cfg, on_event=...)`.

    python examples/tracker_callback.py            # the default run (5 members on mnist-5k), about a minute
    python examples/tracker_callback.py --tiny     # 2 members on 8 x 8 digits, 2 epochs: a smoke run

`on_event` is called on the driver, in order, with every typed event of `workers.events`:
`Started`, one `EpochEnded` per epoch, `Done`, and `Restarted` / `Lost` when an actor dies. Here
the tracker is a small JSON-lines file with MLflow's method names (`log_metric(key, value, step)`,
`set_tag`), so the example needs nothing else installed. For MLflow itself there is a built-in
tracker, `ensemble.run(cfg, tracker="mlflow")` (the mlflow extra); this protocol is for the others:
with Weights & Biases, call `wandb.log({key: value}, step=step)` in `log_metric` instead.
"""

import argparse
import json
import time
from pathlib import Path

import ensemble
from workers.events import Done, EpochEnded, Lost, Restarted, Started


class JsonlTracker:
    """A stand-in for a tracker: one JSON object per line, appended as the run goes."""

    def __init__(self, path: Path):
        self.path = path
        path.write_text("")

    def _write(self, **entry) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({"time": time.time(), **entry}) + "\n")

    def log_metric(self, key: str, value: float, step: int) -> None:
        self._write(kind="metric", key=key, value=value, step=step)

    def set_tag(self, key: str, value: str) -> None:
        self._write(kind="tag", key=key, value=value)


class TrackerForwarder:
    """The on_event callback: each member's losses per epoch, and how it ended, to the tracker.
    It must return quickly (the next event waits for it) and must not raise (that fails the run)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def __call__(self, event) -> None:
        match event:
            case Started(name=name, resumed_from=resumed) if resumed is not None:
                self.tracker.set_tag(f"{name}.resumed_from", str(resumed))
            case EpochEnded(name=name, record=record):
                self.tracker.log_metric(f"{name}.train_loss", record.train_loss, step=record.epoch)
                self.tracker.log_metric(f"{name}.val_loss", record.val_loss, step=record.epoch)
                self.tracker.log_metric(f"{name}.epoch_seconds", record.seconds, step=record.epoch)
            case Done(name=name, outcome=outcome):
                self.tracker.set_tag(f"{name}.stopped", outcome.stop_reason)
            case Restarted(name=name) | Lost(name=name):
                self.tracker.set_tag(f"{name}.status", type(event).__name__.lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2 members, 2 epochs on 8 x 8 digits (a smoke run)")
    parser.add_argument("--log", type=Path, default=Path("tracker.jsonl"), help="where the tracker writes")
    args = parser.parse_args()

    cfg = ensemble.EnsembleConfig()
    if args.tiny:
        cfg = cfg.with_overrides(["members=2", "train.epochs=2", "data.name=digits", "data.train_size=150",
                                  "data.val_size=60", "data.test_size=150", "model.channels=[4, 8]",
                                  "baseline.max_epochs=2"])
    tracker = JsonlTracker(args.log)
    # progress="auto": keep the progress display too (given on_event alone, a run is quiet).
    result = ensemble.run(cfg, on_event=TrackerForwarder(tracker), progress="auto")

    entries = [json.loads(line) for line in args.log.read_text().splitlines()]
    metrics = [e for e in entries if e["kind"] == "metric"]
    stopped = {e["key"].split(".")[0]: e["value"] for e in entries
               if e["kind"] == "tag" and e["key"].endswith(".stopped")}
    print(f"{args.log}: {len(metrics)} metrics; stopped: {stopped}")
    print(f"ensemble test accuracy {result.report.ensemble.test_accuracy:.3f}, run directory {result.run_dir}")


if __name__ == "__main__":
    main()
