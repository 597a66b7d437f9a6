"""The claim's verdict as a paired comparison on the same test images: what the evidence says, and no more.

One run (`compare`): the ensemble and the baseline classify the same n test images, so each image is
a matched pair. Counting the images only one side gets right (b: only the ensemble, c: only the
baseline) gives
- the accuracy difference (b - c) / n with its 95% confidence interval from Newcombe's hybrid score
  ("square-and-add") interval for paired proportions: Newcombe (1998), "Improved confidence intervals
  for the difference between binomial proportions based on paired data", Stat Med 17:2635-2650,
  method 10 (Wilson score intervals for each accuracy, combined with the continuity-corrected phi);
- McNemar's exact test: two-sided binomial test of b out of b + c against 1/2 (p = 1 when b + c = 0).
Accuracy is "better" or "worse" only when McNemar's p < 0.05; otherwise the sentence says "no
detectable accuracy difference on n test images" (never "the same": the interval in the sentence says
how large a difference the data still allow; the outcome key keeps its old name, `same-accuracy-*`).
The test decides and the interval describes, so at the margin the two can disagree.
Each side's accuracy also carries its own Wilson score 95% interval (`*_accuracy_ci95`).
Wall-clock keeps its band: within TIME_TOLERANCE (5%) of the baseline's time is "the same time".
The band is decided on the end-to-end wall-clock (training + combiner, as a user waits); the training
phases alone give `training_speedup` and `training_time`, and the sentence says when the time cell would
differ on training time alone (then the combiner fits decided it). One run's timing is one measurement
on one machine, and its sentence says so.

Chance: the majority-class share of the test labels. A side is above chance when a one-sided
binomial test (accuracy > chance) gives p < 0.05. When neither side is, the claim cannot be tested
on this data (the untrained-encoder reference does not count for this; `chance_sentence` words it).

Outcome keys (stable; `OUTCOMES` maps each to its words), one per accuracy x time cell:
  better-faster, better-same-time, better-slower,
  same-accuracy-faster, same-accuracy-same-time, same-accuracy-slower,
  worse-faster, worse-same-time, worse-slower,
(`same-accuracy` is the key of "no detectable accuracy difference"),
plus not-testable-at-chance (neither side above chance) and no-baseline (nothing to compare with).
`SUPPORTING` holds the cells that support the claim ("the same accuracy in less time, or better
accuracy in the same time"): better-faster, same-accuracy-faster, better-same-time. supports_claim is
None for the two untestable keys.

Repeats (`compare_repeats`, K runs with different seeds): the per-run differences are tested across
seeds with a paired t-test (one-sample t on ensemble - baseline accuracy, two-sided, 5%) and a sign
test (binomial on the signs, ties dropped; it cannot reach 5% below K = 6, so it is reported, and
decides only when the t-test is undefined because every difference is the same). The t-test takes
the K differences as independent draws: each seed redraws the data splits, so each difference
carries training and test-sample noise; where every seed tests on the same images, that sample's
noise is shared and the test speaks for those images only. Across seeds,
- accuracy is "better"/"worse" when that test gives p < 0.05 in that direction, else "the same";
- time is "faster" when every run is faster, or when a t-test on the log speed-ups
  (ln baseline / ensemble seconds) gives p < 0.05 and the geometric-mean speed-up lies beyond the
  5% band; "slower" the same way round; otherwise "the same time"; the geometric-mean speed-up
  carries the t interval of the log speed-ups, exponentiated (`speedup_ci95`);
- with K = 1 the one run's own McNemar test and time band decide;
- the outcome is the cell of those two, not-testable-at-chance when no run can test the claim, and
  no-baseline when any run lacks a baseline (runs where neither side beats chance stay in the tests,
  and the sentence counts them). So "supports" across seeds needs time faster across seeds (or the
  same time with accuracy significantly better) and accuracy not significantly worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ensemble.report.statistics import (
    ALPHA,
    above_chance_p,
    chance_accuracy,
    format_p,
    mcnemar_exact_p,
    mean_test,
    p_text,
    paired_difference_ci,
    sign_test,
    wilson_interval,
)

TIME_TOLERANCE = 0.05   # wall-clocks within 5% of the baseline's count as the same time

Accuracy = Literal["better", "same", "worse"]
Time = Literal["faster", "same", "slower"]

_ACCURACY_KEYS = {"better": "better", "same": "same-accuracy", "worse": "worse"}
_TIME_KEYS = {"faster": "faster", "same": "same-time", "slower": "slower"}
_ACCURACY_WORDS = {"better": "better accuracy", "same": "no detectable accuracy difference",
                   "worse": "worse accuracy"}
_TIME_WORDS = {"faster": "in less time", "same": "in the same time", "slower": "in more time"}

NOT_TESTABLE, NO_BASELINE = "not-testable-at-chance", "no-baseline"
OUTCOMES = {f"{_ACCURACY_KEYS[a]}-{_TIME_KEYS[t]}": f"{_ACCURACY_WORDS[a]} {_TIME_WORDS[t]}"
            for a in _ACCURACY_KEYS for t in _TIME_KEYS}
OUTCOMES |= {NOT_TESTABLE: "neither model beats chance", NO_BASELINE: "no baseline was trained"}
SUPPORTING = frozenset({"better-faster", "same-accuracy-faster", "better-same-time"})


class Comparison(BaseModel):
    """One run's paired comparison; `report.json` keeps it as `comparison`."""
    model_config = ConfigDict(frozen=True)

    n: int                                   # test images, the same ones for both sides
    chance_accuracy: float                   # majority-class share of the test labels
    ensemble_accuracy: float
    ensemble_chance_p: float                 # one-sided binomial p of ensemble accuracy > chance
    ensemble_seconds: float                  # end to end: training + combiner
    ensemble_accuracy_ci95: tuple[float, float] | None = None   # Wilson score (absent in older reports)
    ensemble_train_seconds: float | None = None                 # the training phase alone
    baseline_accuracy: float | None = None
    baseline_accuracy_ci95: tuple[float, float] | None = None
    baseline_train_seconds: float | None = None
    baseline_chance_p: float | None = None
    baseline_seconds: float | None = None
    accuracy_difference: float | None = None          # ensemble - baseline
    ci95: tuple[float, float] | None = None           # Newcombe (1998) method 10
    mcnemar_p: float | None = None                    # exact, two-sided
    ensemble_only_correct: int | None = None          # b: discordant pairs the ensemble wins
    baseline_only_correct: int | None = None          # c: discordant pairs the baseline wins
    accuracy: Accuracy | None = None
    time: Time | None = None
    speedup: float | None = None                      # baseline_seconds / ensemble_seconds
    training_speedup: float | None = None             # the same on the training phases alone
    training_time: Time | None = None                 # the time band on the training phases alone
    outcome: str                                         # a key of OUTCOMES
    supports_claim: bool | None                       # None: the claim cannot be tested
    sentence: str                                        # the verdict's first sentence, all figures in it
    chance_note: str = ""                                # a side that does not beat chance, when the other does
    timing_note: str = ""                                # what the time cell rests on

    @property
    def text(self) -> str:
        return " ".join(part for part in (self.sentence, self.chance_note, self.timing_note) if part)


class RepeatsComparison(BaseModel):
    """K runs' paired comparisons and the test of their differences across seeds."""
    model_config = ConfigDict(frozen=True)

    runs: int
    seeds: list[int]
    outcomes: list[str]                                  # each run's own outcome key
    supporting_runs: int
    at_chance_runs: int                                  # runs where neither side beats chance
    mcnemar_p: list[float | None]
    accuracy_differences: list[float | None]
    mean_difference: float | None = None
    difference_ci95: tuple[float, float] | None = None    # t interval of the mean difference
    difference_t_p: float | None = None               # paired t-test; None: K < 2 or no spread
    runs_ahead: int = 0                                  # runs where the ensemble is more accurate
    runs_behind: int = 0
    difference_sign_p: float | None = None            # sign test, ties dropped
    speedups: list[float | None]                      # baseline seconds / ensemble seconds
    geometric_mean_speedup: float | None = None
    speedup_ci95: tuple[float, float] | None = None    # exp of the t interval of the log speed-ups
    log_speedup_t_p: float | None = None
    faster_runs: int = 0                                 # runs beyond the 5% band, each way
    slower_runs: int = 0
    accuracy: Accuracy | None = None
    time: Time | None = None
    outcome: str
    supports_claim: bool | None
    sentence: str


# --- one run ---

def time_band(ensemble_seconds: float, baseline_seconds: float) -> Time:
    """Faster or slower only beyond TIME_TOLERANCE of the baseline's wall-clock: timing jitters too."""
    margin = TIME_TOLERANCE * baseline_seconds
    if ensemble_seconds < baseline_seconds - margin:
        return "faster"
    return "slower" if ensemble_seconds > baseline_seconds + margin else "same"


def accuracy_call(direction: float, p: float) -> Accuracy:
    """'better' or 'worse' (by the sign of `direction`) only when the test is significant."""
    if p >= ALPHA or direction == 0:
        return "same"
    return "better" if direction > 0 else "worse"


def outcome_key(accuracy: Accuracy, time: Time) -> str:
    return f"{_ACCURACY_KEYS[accuracy]}-{_TIME_KEYS[time]}"


def compare(ensemble_predictions, baseline_predictions, test_labels, ensemble_seconds: float,
            baseline_seconds: float | None = None, ensemble_train_seconds: float | None = None,
            baseline_train_seconds: float | None = None) -> Comparison:
    """The paired verdict on the claim for one run; predictions and labels are 1-D arrays over the
    same test images. `baseline_predictions` None: no baseline was trained (outcome no-baseline).
    The `*_train_seconds` (training phases alone), when given, split the time cell from the combiners'."""
    labels = _vector(test_labels, "test_labels")
    ensemble_right = _vector(ensemble_predictions, "ensemble_predictions", labels.size) == labels
    n, chance = labels.size, chance_accuracy(labels)
    ensemble: dict[str, Any] = {"n": n, "chance_accuracy": chance, "ensemble_accuracy": float(ensemble_right.mean()),
                "ensemble_accuracy_ci95": wilson_interval(int(ensemble_right.sum()), n),
                "ensemble_chance_p": above_chance_p(ensemble_right.sum(), n, chance),
                "ensemble_seconds": _seconds(ensemble_seconds, "ensemble_seconds"),
                "ensemble_train_seconds": _optional_seconds(ensemble_train_seconds, "ensemble_train_seconds")}
    if baseline_predictions is None:
        return _no_baseline(ensemble)
    baseline_right = _vector(baseline_predictions, "baseline_predictions", n) == labels
    a = int(np.sum(ensemble_right & baseline_right))
    b = int(np.sum(ensemble_right & ~baseline_right))
    c = int(np.sum(~ensemble_right & baseline_right))
    p = mcnemar_exact_p(b, c)
    fields = dict(ensemble, baseline_accuracy=float(baseline_right.mean()),
                  baseline_accuracy_ci95=wilson_interval(int(baseline_right.sum()), n),
                  baseline_chance_p=above_chance_p(baseline_right.sum(), n, chance),
                  accuracy_difference=(b - c) / n, ci95=paired_difference_ci(a, b, c, n - a - b - c),
                  mcnemar_p=p, ensemble_only_correct=b, baseline_only_correct=c, accuracy=accuracy_call(b - c, p),
                  **_timing(ensemble_seconds, baseline_seconds, ensemble["ensemble_train_seconds"],
                            _optional_seconds(baseline_train_seconds, "baseline_train_seconds")))
    testable = fields["ensemble_chance_p"] < ALPHA or fields["baseline_chance_p"] < ALPHA
    outcome = outcome_key(fields["accuracy"], fields["time"]) if testable else NOT_TESTABLE
    draft = Comparison(**fields, outcome=outcome, supports_claim=outcome in SUPPORTING if testable else None,
                       sentence="")
    return draft.model_copy(update={"sentence": run_sentence(draft), "chance_note": chance_note(draft),
                                    "timing_note": timing_note(draft)})


def _timing(ensemble_seconds: float, baseline_seconds: float | None, ensemble_train: float | None,
            baseline_train: float | None) -> dict:
    """The time band end to end, the speed-up, and the same on the training phases alone when known."""
    seconds = _seconds(baseline_seconds, "baseline_seconds")
    training: tuple[float | None, Time | None] = (None, None)
    if ensemble_train is not None and baseline_train is not None:
        training = baseline_train / ensemble_train, time_band(ensemble_train, baseline_train)
    return {"baseline_seconds": seconds, "baseline_train_seconds": baseline_train,
            "time": time_band(ensemble_seconds, seconds), "speedup": seconds / ensemble_seconds,
            "training_speedup": training[0], "training_time": training[1]}


def timing_note(comparison: Comparison) -> str:
    """One run's time cell: a single measurement; the split into training and combiner, and whether the
    cell would read differently on training time alone."""
    c = comparison
    if c.baseline_seconds is None or c.outcome == NOT_TESTABLE:
        return ""
    note = f"The time cell rests on one measurement on this machine (speed-up {c.speedup:.2f}x end to end"
    if c.training_speedup is None:
        return note + ")."
    # compare() sets the training figures together, and the time band with the baseline's seconds
    assert (c.time is not None and c.training_time is not None and c.ensemble_train_seconds is not None
            and c.baseline_train_seconds is not None)
    note += (f", {c.training_speedup:.2f}x on training alone: {c.ensemble_train_seconds:,.1f} s against "
             f"{c.baseline_train_seconds:,.1f} s).")
    if c.training_time != c.time:
        note += (f" On training time alone it would read \"{_TIME_WORDS[c.training_time]}\": the combiner fits "
                 f"({c.ensemble_seconds - c.ensemble_train_seconds:,.1f} s against "
                 f"{c.baseline_seconds - c.baseline_train_seconds:,.1f} s) decided it.")
    return note


def accuracy_words(accuracy: Accuracy, n: int) -> str:
    """'better accuracy', or 'no detectable accuracy difference on 1,000 test images' when the test did not decide."""
    return f"{_ACCURACY_WORDS[accuracy]} on {n:,} test images" if accuracy == "same" else _ACCURACY_WORDS[accuracy]


def run_sentence(comparison: Comparison) -> str:
    """The verdict's first sentence: what the outcome means, then every figure it rests on."""
    c = comparison
    if c.outcome == NO_BASELINE:
        return (f"No baseline was trained, so this run cannot test the claim (ensemble {c.ensemble_accuracy:.4f} "
                f"in {c.ensemble_seconds:,.1f} s).")
    # a baseline was trained: compare() set every paired figure
    assert (c.baseline_chance_p is not None and c.ci95 is not None and c.mcnemar_p is not None
            and c.accuracy is not None and c.time is not None)
    if c.outcome == NOT_TESTABLE:
        return (f"Cannot test the claim on this data: neither model beats chance (majority-class rate "
                f"{c.chance_accuracy:.4f}; ensemble {c.ensemble_accuracy:.4f}, one-sided binomial p "
                f"{format_p(c.ensemble_chance_p)}; baseline {c.baseline_accuracy:.4f}, p "
                f"{format_p(c.baseline_chance_p)}), so neither model learned anything the head could use.")
    head = "Supports the claim" if c.supports_claim else "Does not support the claim"
    lo, hi = c.ci95
    cell = f"{accuracy_words(c.accuracy, c.n)}{',' if c.accuracy == 'same' else ''} {_TIME_WORDS[c.time]}"
    return (f"{head}: {cell} (difference {c.accuracy_difference:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], "
            f"McNemar p {format_p(c.mcnemar_p)}; ensemble {c.ensemble_accuracy:.4f} in {c.ensemble_seconds:,.1f} s, "
            f"baseline {c.baseline_accuracy:.4f} in {c.baseline_seconds:,.1f} s).")


def chance_note(comparison: Comparison) -> str:
    """Names a side that does not beat chance when the verdict itself does not already say so."""
    c = comparison
    if c.outcome == NOT_TESTABLE:
        return ""
    sides = [("ensemble", c.ensemble_accuracy, c.ensemble_chance_p), ("baseline", c.baseline_accuracy,
                                                                       c.baseline_chance_p)]
    return " ".join(f"The {side} does not beat chance ({accuracy:.4f} against the majority-class rate "
                    f"{c.chance_accuracy:.4f}; one-sided binomial p {format_p(p)})."
                    for side, accuracy, p in sides if p is not None and p >= ALPHA)


def chance_sentence(untrained_accuracy: float, n: int, chance: float) -> str:
    """The untrained-encoder reference line: is the head already above chance on random features?"""
    p = above_chance_p(round(untrained_accuracy * n), n, chance)
    test = f"(majority-class rate {chance:.4f}; one-sided binomial p {format_p(p)})"
    verdict = (f"above chance {test}: the head already finds signal in random features" if p < ALPHA else
               f"not above chance {test}: on random features the head does no better than always answering "
               "the most common class")
    return f"The same combiner on the untrained encoders (epoch 0) reaches {untrained_accuracy:.4f}, {verdict}."


def _no_baseline(ensemble: dict) -> Comparison:
    draft = Comparison(**ensemble, outcome=NO_BASELINE, supports_claim=None, sentence="")
    return draft.model_copy(update={"sentence": run_sentence(draft), "chance_note": chance_note(draft)})


def _vector(values, name: str, size: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, not shape {array.shape}")
    if size is not None and array.size != size:
        raise ValueError(f"{name} has {array.size} entries but there are {size} test labels")
    return array


def _optional_seconds(value, name: str) -> float | None:
    return None if value is None else _seconds(value, name)


def _seconds(value, name: str) -> float:
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


# --- K runs with different seeds ---

def compare_repeats(comparisons: Sequence[Comparison], seeds: Sequence[int]) -> RepeatsComparison:
    """The claim's verdict across seeds: supports only when the per-seed differences, tested across
    seeds, do (see the module docstring for the exact rule); the per-run outcomes are kept beside it."""
    if not comparisons or len(comparisons) != len(seeds):
        raise ValueError(f"need one seed per comparison and at least one: {len(comparisons)} comparisons, "
                         f"{len(seeds)} seeds")
    per_run = {"runs": len(comparisons), "seeds": list(seeds), "outcomes": [c.outcome for c in comparisons],
               "supporting_runs": sum(c.outcome in SUPPORTING for c in comparisons),
               "at_chance_runs": sum(c.outcome == NOT_TESTABLE for c in comparisons),
               "mcnemar_p": [c.mcnemar_p for c in comparisons],
               "accuracy_differences": [c.accuracy_difference for c in comparisons],
               "speedups": [c.baseline_seconds / c.ensemble_seconds if c.baseline_seconds else None
                            for c in comparisons]}
    if any(c.outcome == NO_BASELINE for c in comparisons):
        draft = RepeatsComparison(**per_run, outcome=NO_BASELINE, supports_claim=None, sentence="")
        return draft.model_copy(update={"sentence": repeats_sentence(draft)})
    fields = dict(per_run, **_across_seeds(comparisons))
    if fields["at_chance_runs"] == fields["runs"]:
        outcome, supports = NOT_TESTABLE, None
    else:
        outcome = outcome_key(fields["accuracy"], fields["time"])
        supports = outcome in SUPPORTING
    draft = RepeatsComparison(**fields, outcome=outcome, supports_claim=supports, sentence="")
    return draft.model_copy(update={"sentence": repeats_sentence(draft)})


def _across_seeds(comparisons: Sequence[Comparison]) -> dict:
    """The tests across seeds of the accuracy differences and the log speed-ups, and their calls."""
    paired = [_paired_figures(c) for c in comparisons]
    differences, bands = [d for d, _, _ in paired], [band for _, _, band in paired]
    mean, interval, t_p = mean_test(differences)
    ahead, behind, sign_p = sign_test(differences)
    log_mean, log_interval, log_p = mean_test([log_speedup for _, log_speedup, _ in paired])
    if len(comparisons) == 1:  # nothing to add across seeds: the run's own test and band decide
        accuracy, time = comparisons[0].accuracy, comparisons[0].time
    else:  # the t-test decides; with no spread at all only the signs are left
        accuracy = accuracy_call(mean, t_p) if t_p is not None else accuracy_call(ahead - behind, sign_p)
        time = _time_across(bands, math.exp(log_mean), log_p)
    return {"mean_difference": mean, "difference_ci95": interval, "difference_t_p": t_p, "runs_ahead": ahead,
            "runs_behind": behind, "difference_sign_p": sign_p, "geometric_mean_speedup": math.exp(log_mean),
            "speedup_ci95": tuple(math.exp(x) for x in log_interval) if log_interval else None,
            "log_speedup_t_p": log_p, "faster_runs": bands.count("faster"), "slower_runs": bands.count("slower"),
            "accuracy": accuracy, "time": time}


def _paired_figures(c: Comparison) -> tuple[float, float, Time]:
    """A run with a baseline (the caller returned early without one): its accuracy difference, log speed-up
    and time band."""
    assert c.accuracy_difference is not None and c.baseline_seconds is not None and c.time is not None
    return c.accuracy_difference, math.log(c.baseline_seconds / c.ensemble_seconds), c.time


def _time_across(bands: Sequence[Time], geometric_speedup: float, log_p: float | None) -> Time:
    """Faster (slower) across seeds: in every run, or significantly and beyond the band on average."""
    significant = log_p is not None and log_p < ALPHA
    if all(b == "faster" for b in bands) or (significant and geometric_speedup > 1 / (1 - TIME_TOLERANCE)):
        return "faster"
    if all(b == "slower" for b in bands) or (significant and geometric_speedup < 1 / (1 + TIME_TOLERANCE)):
        return "slower"
    return "same"


def repeats_sentence(repeats: RepeatsComparison) -> str:
    """The verdict across seeds with the tests it rests on, then how the runs fared on their own."""
    r = repeats
    seeds = f"{r.runs} seed{'s' if r.runs != 1 else ''} ({_seed_list(r.seeds)})"
    if r.outcome == NO_BASELINE:
        return f"No baseline was trained, so these runs over {seeds} cannot test the claim."
    own = (f" Run by run, the claim is supported in {r.supporting_runs} of {r.runs} (per-run McNemar p: "
           + ", ".join(p_text(p) for p in r.mcnemar_p if p is not None) + ").")  # all set: each run had a baseline
    if r.outcome == NOT_TESTABLE:
        return (f"Cannot test the claim on this data: in none of the runs over {seeds} does either model beat "
                "chance, so neither model learned anything the head could use." + own)
    # tested across seeds: _across_seeds set the calls and the sign test
    assert r.accuracy is not None and r.time is not None and r.difference_sign_p is not None
    head = "Supports the claim" if r.supports_claim else "Does not support the claim"
    interval = "n/a" if r.difference_ci95 is None else "[{:+.4f}, {:+.4f}]".format(*r.difference_ci95)
    accuracy = (f"mean difference {r.mean_difference:+.4f}, 95% CI {interval}, paired t-test p "
                f"{_optional_p(r.difference_t_p)}, sign test p {format_p(r.difference_sign_p)}, ensemble ahead "
                f"in {r.runs_ahead} of {r.runs} runs and behind in {r.runs_behind}")
    speed_interval = "n/a" if r.speedup_ci95 is None else "[{:.2f}x, {:.2f}x]".format(*r.speedup_ci95)
    time = (f"geometric-mean speed-up {r.geometric_mean_speedup:.2f}x, 95% CI {speed_interval} across seeds, "
            f"t-test on log speed-ups p "
            f"{_optional_p(r.log_speedup_t_p)}, faster in {r.faster_runs} of {r.runs} runs and slower in "
            f"{r.slower_runs}")
    notes = own
    if r.at_chance_runs:
        notes += f" In {r.at_chance_runs} of {r.runs} runs neither model beats chance."
    if r.runs == 1:
        notes += " With one run there is no spread across seeds: its own McNemar test and time band decide."
    words = f"{_ACCURACY_WORDS[r.accuracy]}{' across seeds,' if r.accuracy == 'same' else ''} {_TIME_WORDS[r.time]}"
    return f"{head} across {seeds}: {words} ({accuracy}; {time}).{notes}"


def _optional_p(p: float | None) -> str:
    return "n/a" if p is None else format_p(p)


def _seed_list(seeds: Sequence[int]) -> str:
    consecutive = len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}..{seeds[-1]}" if consecutive else ", ".join(map(str, seeds))
