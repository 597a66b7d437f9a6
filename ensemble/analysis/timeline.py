"""When a saved epoch was ready, read from the run's measured timelines (no timing is invented).

Times are seconds since the side's phase began (members' phase, or the baseline's), as the
driver recorded them in report.json (`members[].timeline`, `baseline.timeline`).
"""

from __future__ import annotations

from itertools import accumulate
from typing import Iterable

from ensemble.report import MemberReport


def epoch_end_seconds(member: MemberReport) -> dict[int, float]:
    """When each trained epoch finished, in seconds since the member's phase began.

    From the measured timeline; an epoch trained again after a restart keeps its last span.
    A member without a full timeline (it finished before a `--resume`) falls back to its own
    measured epoch durations added up, which leaves out its start-up time.
    """
    spans = {span.epoch: span.end for span in member.timeline}
    if all(entry.epoch in spans for entry in member.history):
        return spans
    epochs = [entry.epoch for entry in member.history]
    return dict(zip(epochs, accumulate(entry.seconds for entry in member.history), strict=True))


def ready_seconds(finished: Iterable[tuple[MemberReport, int]]) -> float:
    """When the slowest of these (member, epoch) pairs had finished its epoch; 0 for none."""
    return max((epoch_end_seconds(member)[epoch] for member, epoch in finished if epoch > 0), default=0.0)
