"""The stop rules (eager: plateau, fixed, budget, none; the baseline's early stopping) and the choice
of the checkpoint to freeze: pure functions of a loss history, without Ray."""

import math

import pytest

from ensemble.builders import baseline_rule, member_rule, select_epoch
from ensemble.config import BaselineConfig, EagerConfig
from workers.history import EpochRecord

NAN = float("nan")


def history(*val_losses, seconds=1.0):
    return [EpochRecord(i + 1, v, v, seconds) for i, v in enumerate(val_losses)]


def first_stop(decide, losses, **kw):
    """Feed the history epoch by epoch, as the training loop does; return the epoch it stops at."""
    records = history(*losses, **kw)
    for n in range(1, len(records) + 1):
        decision = decide(records[:n])
        if decision.stop:
            return n, decision
    return None, decision


def test_plateau_stops_when_relative_gain_falls_below_threshold():
    rule = member_rule(EagerConfig(rule="plateau", threshold=0.1), 50)
    epoch, decision = first_stop(rule, [100, 80, 70, 65, 64])  # gains 20%, 12.5%, 7.1%
    assert epoch == 4 and "plateau" in decision.reason and not decision.diverged


def test_plateau_respects_min_epochs():
    rule = member_rule(EagerConfig(rule="plateau", threshold=0.1, min_epochs=4), 50)
    assert first_stop(rule, [100, 99, 98, 97.5, 97])[0] == 4


def test_fixed_stops_after_k_epochs():
    rule = member_rule(EagerConfig(rule="fixed", epoch=3), 50)
    epoch, decision = first_stop(rule, [10, 9, 8, 7, 6])
    assert epoch == 3 and "fixed" in decision.reason


def test_budget_stops_before_next_epoch_would_exceed_budget():
    rule = member_rule(EagerConfig(rule="budget", budget_seconds=10), 50)
    epoch, decision = first_stop(rule, [10, 9, 8, 7, 6, 5, 4], seconds=3.0)  # 3 epochs = 9 s, 4th would be 12 s
    assert epoch == 3 and "budget" in decision.reason


def test_none_trains_to_the_maximum():
    rule = member_rule(EagerConfig(rule="none"), 5)
    epoch, decision = first_stop(rule, [10, 10, 10, 10, 10, 10])
    assert epoch == 5 and "max epochs" in decision.reason


@pytest.mark.parametrize("bad", [NAN, math.inf])
def test_non_finite_loss_stops_as_diverged(bad):
    rule = member_rule(EagerConfig(rule="none"), 50)
    epoch, decision = first_stop(rule, [10, 9, bad, 8])
    assert epoch == 3 and decision.diverged and "diverged" in decision.reason


def test_baseline_early_stopping_waits_patience_epochs_after_best():
    rule = baseline_rule(BaselineConfig(patience=2, max_epochs=50))
    epoch, decision = first_stop(rule, [10, 8, 7, 7.5, 7.2, 6])
    assert epoch == 5 and "after epoch 3" in decision.reason


def test_baseline_min_delta_ignores_tiny_gains():
    rule = baseline_rule(BaselineConfig(patience=2, min_delta=0.05, max_epochs=50))
    assert first_stop(rule, [10, 9.9, 9.8, 9.7])[0] == 3


def test_baseline_stops_at_max_epochs_and_on_nan():
    assert first_stop(baseline_rule(BaselineConfig(max_epochs=3)), [5, 4, 3, 2])[0] == 3
    epoch, decision = first_stop(baseline_rule(BaselineConfig()), [5, NAN])
    assert epoch == 2 and decision.diverged


def test_select_lowest_finite_val_loss():
    assert select_epoch(history(5, 3, 4, NAN)).epoch == 2
    assert select_epoch(history(5, 4, 3)).epoch == 3


def test_select_fixed_epoch_and_missing_epoch():
    assert select_epoch(history(5, 4, 3), fixed_epoch=2).epoch == 2
    assert select_epoch(history(5, 4), fixed_epoch=3).epoch is None


def test_select_nothing_when_first_epoch_diverged():
    assert select_epoch(history(NAN)).epoch is None
