"""The tail of a wide run: seconds from the last member's last epoch to the written report.json, and
the driver's peak memory, for N small members (mnist-5k, 1 epoch each, no baseline).

`ensemble bench` prints it for N = 5, 20, 40 (`tail_table`). Run alone, against any checkout (it
uses only the public `ensemble.run`, so the same file times the code before and after a change):

    PYTHONPATH=<checkout> python ensemble/bench/tail.py --members 5 20 40 --output /tmp/tail

Target (issue 26, on 2 cores): at N = 40 at most 40% of the 29 s tail measured before members
encoded their own features, and from N = 20 to N = 40 growth at most linear.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Sequence, TypeVar

import psutil

TAIL_SETTINGS = ["train.epochs=1", "baseline.enabled=false"]
BEFORE_40_S = 29.0   # the tail at N = 40 before members encoded their own features (issue 26)
TARGET_SHARE = 0.40  # of BEFORE_40_S


Peaks = TypeVar("Peaks", bound="PeakMemory")  # `with` gives back the subclass it was entered on


class PeakMemory:
    """The driver's resident memory (RSS), sampled every 20 ms in a thread; peaks overall and since `mark`."""

    def __init__(self, interval: float = 0.02):
        self.process, self.interval = psutil.Process(), interval
        self.start_rss = self.process.memory_info().rss
        self.peak = self.peak_since_mark = self.start_rss
        self._marked, self._stop = False, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self: Peaks) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> None:
        self._marked, self.peak_since_mark = True, self.process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One sample (a subclass samples more here)."""
        rss = self.process.memory_info().rss
        self.peak = max(self.peak, rss)
        if self._marked:
            self.peak_since_mark = max(self.peak_since_mark, rss)


def measure_tail(members: int, output: Path, extra: Sequence[str] = ()) -> dict:
    """One run of `members` members; the tail is report.json's write time minus the last epoch's end."""
    import ensemble
    from ensemble.config import build_config
    from workers.events import EpochEnded

    name = f"tail-{members}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = build_config({}, [*TAIL_SETTINGS, *extra, f"members={members}", f"output={output}", f"name={name}"])
    last_epoch = [0.0]

    def on_event(event) -> None:
        if isinstance(event, EpochEnded):
            last_epoch[0] = max(last_epoch[0], event.at)
            memory.mark()  # the tail's own peak starts after the last epoch

    started = time.time()
    with PeakMemory() as memory:
        report = ensemble.run(config, on_event=on_event).report
    written = (output / name / "report.json").stat().st_mtime
    mib = 2 ** 20
    return {"members": members, "tail_s": written - last_epoch[0], "wall_s": written - started,
            "train_wall_s": report.ensemble.train_wall_seconds, "feature_s": report.ensemble.feature_seconds,
            "fit_s": report.ensemble.fit_seconds, "test_accuracy": report.ensemble.test_accuracy,
            "untrained_test_accuracy": report.ensemble.untrained_test_accuracy,
            "driver_peak_rss_mib": round(memory.peak / mib, 1),
            "driver_tail_peak_rss_mib": round(memory.peak_since_mark / mib, 1),
            "driver_start_rss_mib": round(memory.start_rss / mib, 1)}


def tail_verdict(rows: Sequence[dict]) -> dict:
    """Target met? At the widest N <= 40: tail <= 40% of 29 s; from N = 20 to 40: tail ratio <= 40/20."""
    by_n = {row["members"]: row["tail_s"] for row in rows}
    share = by_n[40] / BEFORE_40_S if 40 in by_n else None
    growth = by_n[40] / by_n[20] if 20 in by_n and 40 in by_n else None
    return {"share_of_before_40": share, "share_met": share is not None and share <= TARGET_SHARE,
            "growth_20_to_40": growth, "growth_met": growth is not None and growth <= 2.0}


def tail_table(rows: Sequence[dict]) -> str:
    lines = ["Tail of a wide run (mnist-5k, 1 epoch per member, no baseline): last member's last epoch -> "
             "report.json written", "",
             "| members | tail (s) | of which features (s) | fit (s) | run (s) | driver peak RSS (MiB) | "
             "in the tail (MiB) | test accuracy |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['members']} | {r['tail_s']:.1f} | {r['feature_s']:.1f} | {r['fit_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['driver_peak_rss_mib']:.0f} | {r['driver_tail_peak_rss_mib']:.0f} | "
                     f"{r['test_accuracy']:.4f} |")
    v = tail_verdict(rows)
    if v["share_of_before_40"] is not None:
        lines.append(f"Target at N=40: tail <= {TARGET_SHARE:.0%} of the {BEFORE_40_S:.0f} s before members encoded "
                     f"their own features: {v['share_of_before_40']:.0%} ({'met' if v['share_met'] else 'MISSED'})")
    if v["growth_20_to_40"] is not None:
        lines.append(f"Growth from N=20 to N=40: {v['growth_20_to_40']:.2f}x (target <= 2.00x, linear: "
                     f"{'met' if v['growth_met'] else 'MISSED'})")
    return "\n".join(lines)


def tail_from_command_line(argv: Sequence[str] | None = None) -> list[dict]:
    """`python ensemble/bench/tail.py --members ...`: measure each N, print the table and the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[5, 20, 40])
    parser.add_argument("--output", type=Path, default=Path("runs/tail"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    rows = [measure_tail(n, args.output, args.overrides) for n in args.members]
    print(tail_table(rows))
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    tail_from_command_line()
