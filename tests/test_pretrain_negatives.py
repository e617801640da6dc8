"""The pretext task's two accuracies and the two sources of negatives (``pretrain.model.MoCo``).

``acc`` scores the own key against the queue, ``acc_batch`` against the other keys of the batch;
``negatives="batch"`` trains against those instead of the queue. Each check builds keys whose right
answer is known: a key encoder equal to the query encoder (momentum 0) fed the query's own view makes
every key its query, and feeding it the *next* image's view makes no key its own query's.
"""

from __future__ import annotations

import math

import pytest
import torch

from infomin_det.errors import UserError
from pretrain.model import MoCo, arch_of

B = 8


def _views(shift: int) -> torch.Tensor:
    """(B, 2, 3, 32, 32) uint8: view 1 of image i is view 0 of image i + shift (mod B)."""
    imgs = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return torch.stack([imgs, imgs.roll(-shift, 0)], 1)


@pytest.mark.parametrize("negatives", ["queue", "batch"])
def test_accuracies_are_one_for_own_keys_and_zero_for_the_neighbours(negatives):
    torch.manual_seed(0)
    model = MoCo(arch_of("R-18"), queue_size=4 * B, momentum=0.0, negatives=negatives)
    model.train()
    own = model(_views(0))
    assert float(own["acc_batch"]) == 1.0 and float(own["acc"]) == 1.0
    wrong = model(_views(1))
    assert float(wrong["acc_batch"]) == 0.0
    if negatives == "batch":   # the loss's own accuracy is the in-batch one
        assert float(wrong["acc"]) == 0.0 and float(own["loss"].detach()) < math.log(B) < float(wrong["loss"].detach())


def test_batch_negatives_do_not_read_the_queue_and_queue_negatives_do():
    views = _views(0)
    losses = {}
    for negatives in ("queue", "batch"):
        for fill in (0.0, 1.0):
            torch.manual_seed(0)
            model = MoCo(arch_of("R-18"), dim=128, queue_size=4 * B, negatives=negatives)
            model.queue.fill_(fill)
            losses[negatives, fill] = float(model(views)["loss"].detach())
    assert losses["batch", 0.0] == losses["batch", 1.0]
    assert losses["queue", 0.0] != losses["queue", 1.0]


@pytest.mark.parametrize("bad", ["Queue", "", "moco", None, 1])
def test_unknown_negatives_are_refused(bad):
    with pytest.raises(UserError, match="--negatives"):
        MoCo(arch_of("R-18"), queue_size=8, negatives=bad)


def test_the_spec_and_the_cli_refuse_unknown_negatives(tmp_path, capsys):
    from infomin_det.cli import main as cli_main
    from pretrain.train import PretrainSpec

    with pytest.raises(UserError, match="--negatives 'both'"):
        PretrainSpec(data="x", output_dir=str(tmp_path / "o"), negatives="both").check()
    with pytest.raises(SystemExit) as e:
        cli_main(["pretrain", str(tmp_path), "-o", str(tmp_path / "o"), "--negatives", "both"])
    assert e.value.code == 2 and "--negatives" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_batch_negatives_leave_the_queue_as_it_was():
    """The queue is MoCo's; with batch negatives nothing gathers keys into it or moves its pointer."""
    torch.manual_seed(0)
    model = MoCo(arch_of("R-18"), queue_size=4 * B, negatives="batch")
    before = model.queue.clone()
    model(_views(0))
    assert torch.equal(model.queue, before) and int(model.queue_ptr) == 0
