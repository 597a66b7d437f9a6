"""Per-member gauges through Ray's own metrics API (`ray.util.metrics`): each member's and the
baseline's latest epoch, train and validation loss and epoch seconds, tagged with the run and the
member. Ray's metrics agent on the driver's node serves them in Prometheus format at that node's
metrics export port, beside Ray's system metrics, so Prometheus (and the dashboard's Grafana
charts) see a run without any file or extra service.

They are set on the driver, which hears every event wherever the member trained, so one node's
agent carries them all. Ray names them with its `ray_` prefix: `ray_ensemble_member_val_loss`.
"""

from __future__ import annotations

import math

from ray.util.metrics import Gauge

from workers.events import EpochEnded, Event

GAUGES = {  # EpochRecord field -> (gauge name, description)
    "epoch": ("epoch", "the member's latest finished epoch"),
    "train_loss": ("train_loss", "the member's training loss at its latest epoch"),
    "val_loss": ("val_loss", "the member's validation loss at its latest epoch"),
    "seconds": ("epoch_seconds", "seconds the member's latest epoch took"),
}
PREFIX = "ensemble_member_"


def ascii_tag(value: str) -> str:
    """A tag value Ray's metrics take: Ray encodes tags as ASCII (a run named "ü" failed every epoch
    with UnicodeEncodeError), so other characters are written as Python escapes ("\\xfc")."""
    return value.encode("ascii", "backslashreplace").decode("ascii")


class RunMetrics:
    """Called with every event of the run named `run`; sets the gauges from each `EpochEnded`."""

    def __init__(self, run: str):
        self.run = run
        self.gauges = {field: Gauge(PREFIX + name, description=text, tag_keys=("run", "member"))
                       for field, (name, text) in GAUGES.items()}

    def __call__(self, event: Event) -> None:
        if not isinstance(event, EpochEnded):
            return
        tags = {"run": ascii_tag(self.run), "member": ascii_tag(event.name)}
        for field, gauge in self.gauges.items():
            value = getattr(event.record, field)
            if math.isfinite(value):  # a diverged loss stays at its last finite value
                gauge.set(value, tags=tags)
