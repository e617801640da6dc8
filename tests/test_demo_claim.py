"""The demo's claim check: gap InfoMin - random against 2 std over seeds, on report JSON rows."""

import pytest

from infomin_det.demo.pipeline import claim_check


def report(infomin: tuple, random: tuple, metric: str = "bbox/AP") -> dict:
    """A ``to_json``-shaped report with one metric; each row as (mean, std)."""
    def row(name, mean_std):
        mean, std = mean_std
        return {"weights": name, "stats": {metric: {"mean": mean, "std": std, "n": 3}}}
    return {"tables": [{"rows": [row("random", random), row("infomin-r18", infomin)]}]}


@pytest.mark.parametrize("infomin, random, gap, two_std, holds", [
    ((3.0, 0.2), (1.0, 0.4), 2.0, 0.8, True),
    ((1.78, 0.48), (1.47, 0.42), 0.31, 0.96, False),   # the measured demo
    ((3.0, 1.1), (1.0, 0.1), 2.0, 2.2, False),         # the larger std (1.1) counts, not the baseline's
    ((1.0, 0.1), (3.0, 0.1), -2.0, 0.2, False),        # the wrong direction never holds
    ((1.5, 0.0), (1.0, 0.0), 0.5, 0.0, True),          # identical seeds: any positive gap
    ((1.0, 0.0), (1.0, 0.0), 0.0, 0.0, False),         # no gap at all
])
def test_gap_against_two_std(infomin, random, gap, two_std, holds):
    (c,) = claim_check(report(infomin, random), metrics=("bbox/AP",)).values()
    assert (c["gap"], c["two_std"], c["holds"]) == (pytest.approx(gap), pytest.approx(two_std), holds)


@pytest.mark.parametrize("infomin, random", [((None, None), (1.0, 0.2)), ((2.0, None), (1.0, 0.2))])
def test_no_mean_or_no_std_is_not_testable(infomin, random):
    (c,) = claim_check(report(infomin, random), metrics=("bbox/AP",)).values()
    assert c == {"gap": None, "two_std": None, "holds": False}
