"""The claim's verdict as a paired comparison: statistics against published numbers, then verdicts on
constructed predictions (a clear win, a tie within noise, a clear loss, both at chance, ...)."""

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from ensemble.report.comparison import (
    NO_BASELINE,
    NOT_TESTABLE,
    OUTCOMES,
    SUPPORTING,
    Comparison,
    chance_sentence,
    compare,
    compare_repeats,
    time_band,
)
from ensemble.report.statistics import (
    above_chance_p,
    chance_accuracy,
    format_p,
    mcnemar_exact_p,
    mean_test,
    paired_difference_ci,
    sign_test,
)

Z95 = stats.norm.ppf(0.975)
LABELS = np.arange(1000) % 10  # 1,000 balanced test images of 10 classes: chance is 0.1


def paired(both: int, ensemble_only: int, baseline_only: int, labels: np.ndarray = LABELS):
    """Predictions on `labels` with the given paired counts: right on both, on one side only;
    every other image is wrong on both sides."""
    wrong = (labels + 1) % 10
    ensemble, baseline = wrong.copy(), wrong.copy()
    ensemble[:both + ensemble_only] = labels[:both + ensemble_only]
    baseline[:both] = labels[:both]
    baseline[both + ensemble_only:both + ensemble_only + baseline_only] = \
        labels[both + ensemble_only:both + ensemble_only + baseline_only]
    return ensemble, baseline


# --- the statistics against published numbers ---

def test_newcombe_interval_matches_the_published_worked_example():
    # Cavo et al. (2012), complete response before/after consolidation therapy, table [[59, 6], [16, 80]]:
    # Newcombe square-and-add estimate -0.0621, 95% CI -0.1186 to -0.0046 in Fagerland, Lydersen & Laake,
    # "Statistical Analysis of Contingency Tables" (2017), ch. 8, and Stat Med 33:2850-2875 (2014); the same
    # figures are asserted by the book's companion R package (contingencytables, tests/testthat/test-ch8.R).
    lo, hi = paired_difference_ci(59, 6, 16, 80)
    assert (round((6 - 16) / 161, 4), round(lo, 4), round(hi, 4)) == (-0.0621, -0.1186, -0.0046)


def test_mcnemar_exact_matches_published_p_values():
    # Bentur et al. (2009) airway hyper-responsiveness, 1 vs 7 discordant: exact conditional p = 0.070
    # (Fagerland, Lydersen & Laake, BMC Med Res Methodol 13:91, 2013); exactly 2 * 9 / 2**8.
    assert mcnemar_exact_p(1, 7) == pytest.approx(18 / 256)
    # Cavo et al. (2012), 6 vs 16: 0.052 in the same paper; exactly 2 * sum C(22, k<=6) / 2**22.
    assert mcnemar_exact_p(6, 16) == pytest.approx(2 * sum(math.comb(22, k) for k in range(7)) / 2**22)
    assert round(mcnemar_exact_p(6, 16), 3) == 0.052
    # Armitage & Berry (1994, p. 127), two culture media, 12 vs 2: exact P (two sided) = 0.0129 (StatsDirect).
    assert round(mcnemar_exact_p(12, 2), 4) == 0.0129 and mcnemar_exact_p(2, 12) == mcnemar_exact_p(12, 2)
    assert mcnemar_exact_p(0, 0) == 1.0  # nothing tells the two apart


def test_interval_edge_cases():
    # No discordant pairs: centred on 0 and narrow, since every image agrees.
    lo, hi = paired_difference_ci(950, 0, 0, 50)
    assert lo == pytest.approx(-hi) and -0.01 < lo < 0 < hi < 0.01
    # All discordant one way: the upper limit is exactly 1 and the lower one is 1 - sqrt(2) z^2 / (n + z^2)
    # (phi = 0 with empty margins; Wilson's limits for 0/n and n/n are z^2/(n+z^2) away from the estimate).
    for n in (1, 10, 1000):
        lo, hi = paired_difference_ci(0, n, 0, 0)
        assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - math.sqrt(2) * Z95**2 / (n + Z95**2))
    # Swapping the sides mirrors the interval.
    lo, hi = paired_difference_ci(59, 6, 16, 80)
    assert paired_difference_ci(59, 16, 6, 80) == pytest.approx((-hi, -lo))


def test_interval_stays_valid_on_every_small_table():
    for n in range(1, 7):
        for a in range(n + 1):
            for b in range(n + 1 - a):
                for c in range(n + 1 - a - b):
                    lo, hi = paired_difference_ci(a, b, c, n - a - b - c)
                    assert -1 - 1e-12 <= lo <= (b - c) / n <= hi <= 1 + 1e-12


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(17)
    tables = rng.multinomial(200, [0.85, 0.05, 0.03, 0.07], size=2000)  # true difference 0.05 - 0.03
    covered = np.mean([lo <= 0.02 <= hi for lo, hi in (paired_difference_ci(*map(int, t)) for t in tables)])
    assert 0.93 <= covered <= 0.975


def test_tests_across_seeds_match_students_sleep_data():
    # Cushny & Peebles via Student (1908), R's `t.test(extra ~ group, data = sleep, paired = TRUE)`:
    # mean difference 1.58, t = 4.0621 on 9 df, p = 0.002833, 95% CI 0.7001142 to 2.4598858.
    differences = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    mean, interval, p = mean_test(differences)
    assert mean == pytest.approx(1.58) and p == pytest.approx(0.002833, abs=5e-7)
    assert interval == pytest.approx((0.7001142, 2.4598858), abs=5e-7)
    assert sign_test(differences) == (9, 0, pytest.approx(2 / 2**9))  # the zero is dropped
    assert mean_test([0.01]) == (0.01, None, None) and mean_test([0.01] * 3)[1:] == (None, None)
    assert sign_test([0.0, 0.0]) == (0, 0, 1.0)


def test_chance_is_the_majority_class_rate_and_its_test_is_one_sided():
    assert chance_accuracy(LABELS) == 0.1
    assert chance_accuracy(np.array([0] * 70 + [1] * 20 + [2] * 10)) == 0.7
    assert chance_accuracy(np.array(["cat", "dog", "dog"])) == pytest.approx(2 / 3)
    assert above_chance_p(3, 3, 0.5) == pytest.approx(0.125)  # P(3 of 3 | 1/2)
    assert above_chance_p(0, 3, 0.5) == pytest.approx(1.0)


def test_p_values_are_written_with_two_digits_and_never_cross_the_line_by_rounding():
    assert [format_p(p) for p in (0.19, 0.6, 1.0, 0.0012, 0.0004)] == ["= 0.19", "= 0.60", "= 1.0", "= 0.0012",
                                                                         "< 0.001"]
    assert format_p(0.0496) == "= 0.0496" and format_p(0.0504) == "= 0.050"


# --- one run's verdict on constructed predictions ---

def test_clear_win_supports_the_claim():
    ensemble, baseline = paired(890, 70, 10)
    verdict = compare(ensemble, baseline, LABELS, 20.0, 30.0)
    assert (verdict.outcome, verdict.accuracy, verdict.time, verdict.supports_claim) == (
        "better-faster", "better", "faster", True)
    assert (verdict.ensemble_only_correct, verdict.baseline_only_correct, verdict.n) == (70, 10, 1000)
    assert verdict.sentence == (
        "Supports the claim: better accuracy in less time (difference +0.0600, 95% CI [+0.0432, +0.0782], "
        "McNemar p < 0.001; ensemble 0.9600 in 20.0 s, baseline 0.9000 in 30.0 s).")
    assert verdict.chance_note == "" and verdict.speedup == 1.5 and verdict.training_speedup is None
    assert verdict.timing_note == "The time cell rests on one measurement on this machine (speed-up 1.50x end to end)."
    assert verdict.text == verdict.sentence + " " + verdict.timing_note


def test_default_runs_gap_is_a_tie_within_noise():
    # The default run: 0.956 against 0.948 on 1,000 images is 26 against 18 discordant images.
    ensemble, baseline = paired(930, 26, 18)
    verdict = compare(ensemble, baseline, LABELS, 19.6, 29.3)
    assert (verdict.outcome, verdict.accuracy, verdict.supports_claim) == ("same-accuracy-faster", "same", True)
    assert verdict.accuracy_difference == pytest.approx(0.008) and verdict.ci95[0] < 0 < verdict.ci95[1]
    assert verdict.mcnemar_p == pytest.approx(stats.binomtest(26, 44).pvalue)
    assert verdict.sentence == (
        "Supports the claim: no detectable accuracy difference on 1,000 test images, in less time (difference "
        "+0.0080, 95% CI [-0.0054, +0.0217], McNemar p = 0.29; ensemble 0.9560 in 19.6 s, baseline 0.9480 in "
        "29.3 s).")
    assert "the same" not in verdict.text
    slow = compare(ensemble, baseline, LABELS, 29.3, 29.3)  # and the same gap in the same time is not "better"
    assert (slow.outcome, slow.supports_claim) == ("same-accuracy-same-time", False)
    assert slow.sentence.startswith("Does not support the claim: no detectable accuracy difference on 1,000 test "
                                    "images, in the same time (difference")


def test_clear_loss_does_not_support_the_claim_even_when_faster():
    ensemble, baseline = paired(890, 10, 70)
    verdict = compare(ensemble, baseline, LABELS, 20.0, 30.0)
    assert (verdict.outcome, verdict.accuracy, verdict.supports_claim) == ("worse-faster", "worse", False)
    assert verdict.sentence == (
        "Does not support the claim: worse accuracy in less time (difference -0.0600, 95% CI [-0.0782, -0.0432], "
        "McNemar p < 0.001; ensemble 0.9000 in 20.0 s, baseline 0.9600 in 30.0 s).")


def test_both_at_chance_cannot_test_the_claim():
    # Random images with random labels: both sides near 0.1 of 10 balanced classes.
    ensemble, baseline = paired(9, 96, 89)
    verdict = compare(ensemble, baseline, LABELS, 20.0, 30.0)
    assert (verdict.outcome, verdict.supports_claim, verdict.chance_accuracy) == (NOT_TESTABLE, None, 0.1)
    assert verdict.ensemble_chance_p >= 0.05 and verdict.baseline_chance_p >= 0.05
    assert verdict.sentence == (
        "Cannot test the claim on this data: neither model beats chance (majority-class rate 0.1000; ensemble "
        "0.1050, one-sided binomial p = 0.31; baseline 0.0980, p = 0.60), so neither model learned anything the "
        "head could use.")
    assert verdict.accuracy_difference == pytest.approx(0.007) and verdict.mcnemar_p is not None  # still reported


def test_chance_is_the_majority_class_not_one_over_the_classes():
    labels = np.array([0] * 700 + [1] * 300)
    always_zero = np.zeros(1000, dtype=int)  # 0.7 accurate, which is exactly the majority-class rate
    verdict = compare(always_zero, always_zero, labels, 10.0, 20.0)
    assert (verdict.chance_accuracy, verdict.ensemble_accuracy, verdict.outcome) == (0.7, 0.7, NOT_TESTABLE)


def test_one_side_at_chance_is_still_a_comparison_and_is_named():
    ensemble, baseline = paired(0, 500, 95)
    verdict = compare(ensemble, baseline, LABELS, 30.0, 30.0)
    assert (verdict.outcome, verdict.supports_claim) == ("better-same-time", True)
    assert verdict.chance_note == ("The baseline does not beat chance (0.0950 against the majority-class rate "
                                   "0.1000; one-sided binomial p = 0.72).")
    assert verdict.text == verdict.sentence + " " + verdict.chance_note + " " + verdict.timing_note


def test_no_baseline():
    ensemble, _ = paired(0, 500, 95)
    verdict = compare(ensemble, None, LABELS, 20.0)
    assert (verdict.outcome, verdict.supports_claim, verdict.accuracy, verdict.ci95) == (NO_BASELINE, None, None, None)
    assert verdict.sentence == "No baseline was trained, so this run cannot test the claim (ensemble 0.5000 in 20.0 s)."


@pytest.mark.parametrize(("ensemble_seconds", "band"), [
    (28.4, "faster"), (28.5, "same"), (30.0, "same"), (31.5, "same"), (31.6, "slower")])
def test_time_bands_are_5_percent_of_the_baselines_time(ensemble_seconds, band):
    assert time_band(ensemble_seconds, 30.0) == band


@pytest.mark.parametrize(("counts", "ensemble_seconds", "key"), [
    ((890, 70, 10), 30.0, "better-same-time"), ((890, 70, 10), 40.0, "better-slower"),
    ((930, 26, 18), 40.0, "same-accuracy-slower"), ((890, 10, 70), 30.0, "worse-same-time"),
    ((890, 10, 70), 40.0, "worse-slower")])
def test_every_cell_has_its_key_and_only_the_claims_cells_support_it(counts, ensemble_seconds, key):
    ensemble, baseline = paired(*counts)
    verdict = compare(ensemble, baseline, LABELS, ensemble_seconds, 30.0)
    assert (verdict.outcome, verdict.supports_claim) == (key, key in SUPPORTING)
    words = OUTCOMES[key].replace("difference", "difference on 1,000 test images,")
    assert verdict.sentence.startswith(("Supports" if key in SUPPORTING else "Does not support")
                                       + f" the claim: {words} (difference ")
    assert len(OUTCOMES) == 11 and SUPPORTING == {"better-faster", "same-accuracy-faster", "better-same-time"}


def test_comparison_is_frozen_and_round_trips_through_json():
    ensemble, baseline = paired(930, 26, 18)
    verdict = compare(ensemble, baseline, LABELS, 19.6, 29.3)
    assert Comparison.model_validate_json(verdict.model_dump_json()) == verdict
    assert verdict.model_dump(mode="json")["ci95"] == list(verdict.ci95)
    with pytest.raises(ValidationError):
        verdict.outcome = "better-faster"


def test_bad_inputs_are_named():
    ensemble, baseline = paired(930, 26, 18)
    with pytest.raises(ValueError, match="baseline_predictions has 999"):
        compare(ensemble, baseline[:-1], LABELS, 1.0, 1.0)
    with pytest.raises(ValueError, match="test_labels must be a non-empty 1-D"):
        compare(ensemble, baseline, LABELS.reshape(10, 100), 1.0, 1.0)
    with pytest.raises(ValueError, match="baseline_seconds"):
        compare(ensemble, baseline, LABELS, 1.0, None)


def test_untrained_encoder_line_says_whether_it_is_above_chance():
    assert chance_sentence(0.412, 1000, 0.1) == (
        "The same combiner on the untrained encoders (epoch 0) reaches 0.4120, above chance (majority-class rate "
        "0.1000; one-sided binomial p < 0.001): the head already finds signal in random features.")
    assert chance_sentence(0.105, 1000, 0.1) == (
        "The same combiner on the untrained encoders (epoch 0) reaches 0.1050, not above chance (majority-class "
        "rate 0.1000; one-sided binomial p = 0.31): on random features the head does no better than always "
        "answering the most common class.")


# --- K runs with different seeds ---

def run(counts, ensemble_seconds=20.0, baseline_seconds=30.0) -> Comparison:
    ensemble, baseline = paired(*counts)
    return compare(ensemble, baseline, LABELS, ensemble_seconds, baseline_seconds)


def test_repeats_that_all_win_support_the_claim():
    runs = [run((890, 70, 10)), run((890, 65, 12)), run((890, 72, 9))]
    summary = compare_repeats(runs, [0, 1, 2])
    assert (summary.outcome, summary.supports_claim, summary.supporting_runs) == ("better-faster", True, 3)
    assert summary.mean_difference == pytest.approx(np.mean([0.06, 0.053, 0.063]))
    assert summary.difference_t_p == pytest.approx(stats.ttest_1samp([0.06, 0.053, 0.063], 0.0).pvalue)
    assert summary.sentence == (
        "Supports the claim across 3 seeds (0..2): better accuracy in less time (mean difference +0.0587, 95% CI "
        "[+0.0459, +0.0714], paired t-test p = 0.0025, sign test p = 0.25, ensemble ahead in 3 of 3 runs and behind "
        "in 0; geometric-mean speed-up 1.50x, 95% CI n/a across seeds, t-test on log speed-ups p n/a, "
        "faster in 3 of 3 runs and slower in "
        "0). Run by run, the claim is supported in 3 of 3 (per-run McNemar p: < 0.001, < 0.001, < 0.001).")


def test_mixed_repeats_do_not_support_the_claim():
    runs = [run((930, 26, 18), 19.6, 29.3), run((930, 18, 26), 31.0, 29.3), run((930, 22, 22), 29.0, 29.3)]
    summary = compare_repeats(runs, [0, 1, 2])
    assert summary.outcomes == ["same-accuracy-faster", "same-accuracy-slower", "same-accuracy-same-time"]
    assert (summary.outcome, summary.supports_claim, summary.supporting_runs) == ("same-accuracy-same-time", False, 1)
    assert (summary.faster_runs, summary.slower_runs, summary.runs_ahead, summary.runs_behind) == (1, 1, 1, 1)
    assert summary.sentence == (
        "Does not support the claim across 3 seeds (0..2): no detectable accuracy difference across seeds, in the "
        "same time (mean difference "
        "+0.0000, 95% CI [-0.0199, +0.0199], paired t-test p = 1.0, sign test p = 1.0, ensemble ahead in 1 of 3 "
        "runs and behind in 1; geometric-mean speed-up 1.13x, 95% CI [0.61x, 2.08x] across seeds, "
        "t-test on log speed-ups p = 0.49, faster in 1 of 3 "
        "runs and slower in 1). Run by run, the claim is supported in 1 of 3 (per-run McNemar p: 0.29, 0.29, 1.0).")


def test_one_repeat_is_decided_by_its_own_run():
    only = run((930, 26, 18), 19.6, 29.3)
    summary = compare_repeats([only], [7])
    assert (summary.outcome, summary.supports_claim) == (only.outcome, only.supports_claim)
    assert (summary.difference_t_p, summary.difference_ci95, summary.log_speedup_t_p) == (None, None, None)
    assert summary.sentence == (
        "Supports the claim across 1 seed (7): no detectable accuracy difference across seeds, in less time (mean "
        "difference +0.0080, 95% CI "
        "n/a, paired t-test p n/a, sign test p = 1.0, ensemble ahead in 1 of 1 runs and behind in 0; geometric-mean "
        "speed-up 1.49x, 95% CI n/a across seeds, "
        "t-test on log speed-ups p n/a, faster in 1 of 1 runs and slower in 0). Run by run, the "
        "claim is supported in 1 of 1 (per-run McNemar p: 0.29). With one run there is no spread across seeds: its "
        "own McNemar test and time band decide.")


def test_a_loss_consistent_across_seeds_blocks_support_that_every_run_gives_on_its_own():
    runs = [run((930, 18, 26)), run((930, 17, 27)), run((930, 18, 27))]
    assert all(r.outcome == "same-accuracy-faster" for r in runs)  # each run alone: within noise, faster
    summary = compare_repeats(runs, [0, 1, 2])
    assert (summary.outcome, summary.supports_claim, summary.supporting_runs) == ("worse-faster", False, 3)
    assert summary.difference_t_p < 0.05 and summary.difference_ci95[1] < 0
    assert summary.sentence.startswith("Does not support the claim across 3 seeds (0..2): worse accuracy in less "
                                       "time (mean difference -0.0090, 95% CI [-0.0115, -0.0065], paired t-test")


def test_small_gains_that_no_run_shows_alone_add_up_across_seeds():
    runs = [run((930, 26 + k % 3, 18)) for k in range(8)]
    assert all(r.accuracy == "same" for r in runs)
    summary = compare_repeats(runs, list(range(8)))
    assert (summary.accuracy, summary.outcome, summary.supports_claim) == ("better", "better-faster", True)
    assert summary.difference_sign_p == pytest.approx(2 / 2**8)


def test_time_across_seeds_is_faster_when_significant_beyond_the_band_though_not_every_run_is():
    runs = [run((930, 22, 22), e, b) for e, b in [(20, 30), (21, 29.4), (19, 30.4), (20, 31), (29, 29.9)]]
    assert [r.time for r in runs].count("same") == 1
    summary = compare_repeats(runs, list(range(5)))
    assert summary.log_speedup_t_p < 0.05 and summary.geometric_mean_speedup > 1 / 0.95
    assert (summary.time, summary.outcome, summary.faster_runs) == ("faster", "same-accuracy-faster", 4)


def test_identical_differences_leave_only_the_sign_test():
    # The t statistic is undefined with no spread; the signs decide, and 3 of 3 cannot reach 5%.
    assert compare_repeats([run((930, 26, 18))] * 6, list(range(6))).accuracy == "better"  # p = 2 / 2**6
    three = compare_repeats([run((930, 26, 18))] * 3, [0, 1, 2])
    assert (three.accuracy, three.difference_t_p, three.difference_sign_p) == ("same", None, 0.25)


def test_repeats_at_chance_and_without_a_baseline_cannot_test_the_claim():
    at_chance = compare_repeats([run((9, 96, 89))] * 3, [0, 1, 2])
    assert (at_chance.outcome, at_chance.supports_claim, at_chance.at_chance_runs) == (NOT_TESTABLE, None, 3)
    assert at_chance.sentence.startswith("Cannot test the claim on this data: in none of the runs over 3 seeds "
                                         "(0..2) does either model beat chance")
    partly = compare_repeats([run((9, 96, 89)), run((890, 70, 10)), run((890, 65, 12))], [0, 1, 2])
    assert partly.outcome != NOT_TESTABLE and partly.sentence.endswith("In 1 of 3 runs neither model beats chance.")
    ensemble, _ = paired(890, 70, 10)
    alone = compare_repeats([compare(ensemble, None, LABELS, 20.0)] * 2, [3, 4])
    assert (alone.outcome, alone.supports_claim, alone.speedups) == (NO_BASELINE, None, [None, None])
    assert alone.sentence == "No baseline was trained, so these runs over 2 seeds (3, 4) cannot test the claim."


def test_repeats_need_one_seed_per_run():
    with pytest.raises(ValueError, match="one seed per comparison"):
        compare_repeats([run((930, 26, 18))], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        compare_repeats([], [])
