"""Statistics: the Wilson interval of an accuracy, the paired interval of a difference, a ranking AUC."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["paired_difference", "ranking_auc", "wilson_interval"]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default).

    >>> tuple(round(x, 3) for x in wilson_interval(80, 100))
    (0.711, 0.867)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus that of ``b`` on the same questions, with a 95% interval.

    The interval is the normal one of the mean per-question difference (each -1, 0 or 1, or
    anything between for graded 0-1 scores), which pairs the questions: far tighter than two
    separate intervals.

    >>> diff, low, high = paired_difference([True] * 60 + [False] * 40, [True] * 50 + [False] * 50)
    >>> round(diff, 2), low > 0
    (0.1, True)
    """
    if len(a) != len(b) or not a:
        msg = "Compare two strategies on the same, non-empty list of questions."
        raise ValueError(msg)
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    half = z * spread / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def ranking_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Share of (right, wrong) pairs that ``scores`` order right, ties counting half (ROC AUC).

    None when the labels are not mixed. Over one question's candidates it is a judge's
    within-question AUC.

    >>> ranking_auc([0.9, 0.1, 0.5], [True, False, False])
    1.0
    """
    rights = sum(1 for ok in labels if ok)
    wrongs = len(labels) - rights
    if not rights or not wrongs:
        return None
    ordered = sorted(zip(scores, labels), key=lambda pair: pair[0])
    wins = 0.0
    wrong_below = 0
    start = 0
    while start < len(ordered):  # one group of equal scores at a time
        end = start
        while end < len(ordered) and ordered[end][0] == ordered[start][0]:
            end += 1
        right_here = sum(1 for _, ok in ordered[start:end] if ok)
        wrong_here = (end - start) - right_here
        wins += right_here * (wrong_below + 0.5 * wrong_here)
        wrong_below += wrong_here
        start = end
    return wins / (rights * wrongs)
