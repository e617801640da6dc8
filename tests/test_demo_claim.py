"""The demo's claim check: gap InfoMin - random against 2 std over seeds, on report JSON rows."""

import pytest

from infomin_det.demo.pipeline import claim_check


def report(infomin: tuple, random: tuple, metric: str = "bbox/AP") -> dict:
    """A ``to_json``-shaped report with one metric; each row as (mean, std)."""
    def row(name, mean_std):
        mean, std = mean_std
        return {"weights": name, "stats": {metric: {"mean": mean, "std": std, "n": 3}}}
    return {"tables": [{"rows": [row("random", random), row("infomin-r18", infomin)]}]}


@pytest.mark.parametrize("infomin, random, holds", [
    ((3.0, 0.2), (1.0, 0.4), True),     # gap 2.0 > 2 x 0.4
    ((1.78, 0.48), (1.47, 0.42), False),  # the measured demo: gap 0.31 < 2 x 0.48
    ((3.0, 1.1), (1.0, 0.1), False),    # the larger std (1.1) counts, not the baseline's
    ((1.0, 0.1), (3.0, 0.1), False),    # the wrong direction never holds
])
def test_gap_against_two_std(infomin, random, holds):
    (c,) = claim_check(report(infomin, random), metrics=("bbox/AP",)).values()
    assert c["gap"] == pytest.approx(infomin[0] - random[0])
    assert c["two_std"] == pytest.approx(2 * max(infomin[1], random[1]))
    assert c["holds"] is holds


@pytest.mark.parametrize("infomin, random", [((None, None), (1.0, 0.2)), ((2.0, None), (1.0, 0.2))])
def test_no_mean_or_no_std_is_not_testable(infomin, random):
    (c,) = claim_check(report(infomin, random), metrics=("bbox/AP",)).values()
    assert c == {"gap": None, "two_std": None, "holds": False}
