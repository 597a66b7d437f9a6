"""Small things many tests use: a run small enough for tests (8x8 digits, 2 members, 1-2 epochs)
and a tiny custom autoencoder."""

from torch import nn

from ensemble.report import MemberReport

TINY = ["members=2", "train.epochs=2", "data.name=digits", "data.train_size=150", "data.val_size=60",
        "data.test_size=150", "model.channels=[4, 8]", "eager.rule=fixed", "eager.epoch=1",
        "baseline.max_epochs=2", "baseline.width=1.5"]

# Every member trains all three epochs, so the saved checkpoints leave rules something to choose.
THREE_EPOCHS_SAVED = TINY + ["train.epochs=3", "eager.rule=none", "baseline.max_epochs=3"]


class TinyAE(nn.Module):
    """A custom autoencoder for 1 x 8 x 8 images: one linear layer each way, 12 features at width 1
    (`width` makes it wider, as the baseline is built)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        hidden = max(1, round(12 * width))
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.dec = nn.Sequential(nn.Linear(hidden, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x):
        return self.enc(x)

    def forward(self, x):
        return self.dec(self.enc(x))


def made_up_member(val_losses, stop_reason="max epochs", seconds=1.0) -> MemberReport:
    """A member's report entry with these validation losses (None: diverged), one epoch a `seconds`,
    its first epoch starting 2 s into the phase."""
    history = [{"epoch": i + 1, "train_loss": v, "val_loss": v, "seconds": seconds} for i, v in enumerate(val_losses)]
    timeline = [{"epoch": i + 1, "start": 2.0 + i * seconds, "end": 2.0 + (i + 1) * seconds}
                for i in range(len(val_losses))]
    return MemberReport(index=0, name="member_00", epochs_trained=len(history), selected_epoch=len(history),
                        stop_reason=stop_reason, selection_reason="", diverged=False, train_seconds=len(history),
                        history=history, timeline=timeline)
