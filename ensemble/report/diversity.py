"""How much the members differ, measured on the test images: each member's own accuracy (the same
head kind fitted on that member's features alone), how often two members' own heads disagree, and
whether the ensemble beats its best member, by the same paired test the verdict uses (McNemar's
exact test, Newcombe's interval; `comparison`). Pure functions of predictions, tested without Ray."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict

from ensemble.report.comparison import accuracy_call
from ensemble.report.statistics import format_p, mcnemar_exact_p, paired_difference_ci


class Diversity(BaseModel):
    """report.json's `ensemble.diversity`."""
    model_config = ConfigDict(frozen=True)

    members: list[int]                  # member indices, in the matrix's order
    mean_disagreement: Optional[float]  # mean over pairs of the fraction of test images two members disagree on
    matrix: list[list[float]]           # pairwise disagreement, symmetric, 0 on the diagonal
    best_member: int
    best_member_accuracy: float
    difference: float                   # ensemble - best member accuracy
    ci95: tuple[float, float]
    mcnemar_p: float
    sentence: str


def disagreement_matrix(predictions: Sequence[ArrayLike]) -> np.ndarray:
    """Fraction of images on which members i and j predict different classes."""
    votes = np.asarray(predictions)
    return (votes[:, np.newaxis, :] != votes[np.newaxis, :, :]).mean(axis=2)


def mean_disagreement(matrix: np.ndarray) -> Optional[float]:
    """The mean over distinct pairs (None for one member: no pair)."""
    upper = matrix[np.triu_indices(len(matrix), k=1)]
    return float(upper.mean()) if upper.size else None


def diversity(members: Sequence[int], member_predictions: Sequence[ArrayLike],
              ensemble_predictions: ArrayLike, labels: ArrayLike) -> Diversity:
    """The disagreement figures and the ensemble against its best member, paired on the same images."""
    truth = np.asarray(labels)
    accuracies = [float(np.mean(np.asarray(p) == truth)) for p in member_predictions]
    best = int(np.argmax(accuracies))  # the first of equals
    ensemble_right = np.asarray(ensemble_predictions) == truth
    best_right = np.asarray(member_predictions[best]) == truth
    both, ensemble_only = int(np.sum(ensemble_right & best_right)), int(np.sum(ensemble_right & ~best_right))
    best_only = int(np.sum(~ensemble_right & best_right))
    n = len(truth)
    ci = paired_difference_ci(both, ensemble_only, best_only, n - both - ensemble_only - best_only)
    p = mcnemar_exact_p(ensemble_only, best_only)
    matrix = disagreement_matrix(member_predictions)
    draft = Diversity(members=list(members), mean_disagreement=mean_disagreement(matrix),
                      matrix=np.round(matrix, 6).tolist(), best_member=members[best],
                      best_member_accuracy=accuracies[best], difference=(ensemble_only - best_only) / n, ci95=ci,
                      mcnemar_p=p, sentence="")
    return draft.model_copy(update={"sentence": best_member_sentence(draft, float(ensemble_right.mean()))})


def best_member_sentence(d: Diversity, ensemble_accuracy: float) -> str:
    call = accuracy_call(d.difference, d.mcnemar_p)
    words = {"better": "is better than", "worse": "is worse than", "same": "is not shown to differ from"}[call]
    lo, hi = d.ci95
    spread = ("" if d.mean_disagreement is None else
              f"Members' own heads disagree on {d.mean_disagreement:.1%} of test images on average; ")
    return (f"{spread}the ensemble ({ensemble_accuracy:.4f}) {words} its best member, member {d.best_member} "
            f"({d.best_member_accuracy:.4f}): difference {d.difference:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], "
            f"McNemar p {format_p(d.mcnemar_p)}.")
