"""Reading a converted .pkl's metadata without its tensors (``weights_meta`` -> ``read_d2_meta``).

The metadata is the pickled dict's first entry: the fast reader reads a few KiB of a 100 MB file,
works on files whose tensors are damaged, refuses a hostile global in the metadata position without
running it, and a file cut short. Files laid out otherwise (conversions made before the metadata came
first, files without metadata, not pickles) are read in full and say exactly what ``read_d2_pkl`` says.
"""

import io
import os
import pickle

import numpy as np
import pytest

from infomin_det.convert import d2pkl
from infomin_det.convert.d2pkl import read_d2_meta, read_d2_pkl, write_d2_pkl
from infomin_det.engine import weights_check
from infomin_det.engine.weights_check import weights_meta
from infomin_det.errors import UserError
from infomin_det.untrusted import PickleGlobalError, PickleLimitError, pickle_first_entry
from infomin_det.weights_meta import META_KEY, TORCHVISION, ResNetArch, WeightsMeta

META = WeightsMeta(ResNetArch(50), TORCHVISION, "moco-v1/v2", "ab" * 32, "/src/moco.pth.tar",
                   extra={"key": "state_dict", "prefix": "module.encoder_q.", "encoder": "q"})


def _model(n=3):
    rng = np.random.default_rng(0)
    return {f"res2.{i}.conv1.weight": rng.standard_normal((4, 4, 1, 1)).astype(np.float32) for i in range(n)}


class Counting(io.FileIO):
    """A file that counts the bytes actually read from the disk (below Python's buffering)."""

    total = 0

    def readinto(self, b):
        n = super().readinto(b)
        Counting.total += n or 0
        return n


@pytest.fixture
def spy(monkeypatch):
    """Counts full reads (``read_d2_pkl``) and bytes read by ``d2pkl``; empties weights_meta's cache."""
    weights_check._file_meta.cache_clear()
    calls = []
    full = d2pkl.read_d2_pkl

    def counted_full(path):
        calls.append(path)
        return full(path)

    def counted_open(path, mode="r", *a, **k):
        return io.BufferedReader(Counting(path, "r")) if mode == "rb" else open(path, mode, *a, **k)

    Counting.total = 0
    monkeypatch.setattr(d2pkl, "read_d2_pkl", counted_full)
    monkeypatch.setattr(d2pkl, "open", counted_open, raising=False)
    yield calls
    weights_check._file_meta.cache_clear()


def _old_order(path, model, meta=META):
    """A file as write_d2_pkl wrote it before the metadata came first."""
    path.write_bytes(pickle.dumps({"model": model, "__author__": d2pkl.AUTHOR, "matching_heuristics": True,
                                   **({META_KEY: meta.to_dict()} if meta else {})}, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def test_write_puts_the_metadata_first_and_a_full_read_still_sees_everything(tmp_path):
    pkl = tmp_path / "w.pkl"
    write_d2_pkl(pkl, _model(), META)
    with open(pkl, "rb") as f:
        data = pickle.load(f)
    assert list(data) == [META_KEY, "model", "__author__", "matching_heuristics"]
    w = read_d2_pkl(pkl)
    assert w.meta == META and w.author == d2pkl.AUTHOR and w.matching_heuristics and len(w.model) == 3


def test_metadata_of_a_100mb_file_is_read_from_its_first_bytes(tmp_path, spy):
    pkl = tmp_path / "big.pkl"
    write_d2_pkl(pkl, {"res4.0.conv1.weight": np.zeros((1024, 1024, 25), np.float32), **_model()}, META)
    size = pkl.stat().st_size
    assert size > 100 * 2**20
    assert weights_meta(str(pkl)) == META
    assert spy == [] and Counting.total < 64 * 2**10, (spy, Counting.total)   # 100 MB decoded: ~1e8 bytes
    Counting.total = 0
    assert read_d2_pkl(pkl).meta == META and Counting.total >= size     # the full read, for comparison


def test_tensors_damaged_after_the_metadata_are_never_decoded(tmp_path, spy):
    pkl = tmp_path / "w.pkl"
    write_d2_pkl(pkl, _model(200), META)
    raw = bytearray(pkl.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = b"\xff" * 4096               # not pickle opcodes: any decoder stops here
    pkl.write_bytes(bytes(raw))
    assert read_d2_meta(pkl) == META and spy == []
    with pytest.raises(UserError, match="truncated or damaged"):
        read_d2_pkl(pkl)


@pytest.mark.parametrize("keep", [0.5, 0.999, "in-meta"])
def test_a_file_cut_short_is_refused(tmp_path, spy, keep):
    pkl = tmp_path / "w.pkl"
    write_d2_pkl(pkl, _model(50), META)
    raw = pkl.read_bytes()
    pkl.write_bytes(raw[:200] if keep == "in-meta" else raw[:int(len(raw) * keep)])
    with pytest.raises(UserError) as e:
        read_d2_meta(pkl)
    assert "truncated or damaged" in e.value.cause and "\n" not in e.value.cause and spy == []


@pytest.mark.parametrize("with_meta", [True, False])
def test_old_order_files_are_read_in_full_with_the_same_answer(tmp_path, spy, with_meta):
    pkl = _old_order(tmp_path / "old.pkl", _model(), META if with_meta else None)
    assert weights_meta(str(pkl)) == (META if with_meta else None)
    assert len(spy) == 1


def test_old_order_files_keep_every_refusal_of_the_full_read(tmp_path, spy):
    model = _model()
    model["res2.0.conv1.weight"][0] = np.nan
    pkl = _old_order(tmp_path / "nan.pkl", model)
    with pytest.raises(UserError, match="NaN"):
        read_d2_meta(pkl)
    (tmp_path / "nometa.pkl").write_bytes(pickle.dumps({META_KEY: META.to_dict(), "weights": {}}))
    with pytest.raises(UserError, match="lacks 'model'"):   # metadata first, but not followed by "model"
        read_d2_meta(tmp_path / "nometa.pkl")


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])   # GLOBAL / STACK_GLOBAL
def test_a_hostile_global_in_the_metadata_runs_nothing(tmp_path, spy, protocol):
    marker = tmp_path / "owned"
    pkl = tmp_path / "evil.pkl"
    meta = META.to_dict() | {"extra": {"x": Evil(marker)}}
    pkl.write_bytes(pickle.dumps({META_KEY: meta, "model": _model(), "__author__": "x"}, protocol=protocol))
    with pytest.raises(UserError) as e:
        read_d2_meta(pkl)
    assert "not allowed" in e.value.cause and "system" in e.value.cause, e.value.cause
    assert not marker.exists() and spy == []


@pytest.mark.parametrize("content", [
    b"these are not weights\n", b"\x00\x01\x02binary" * 50, b"PK\x03\x04broken zip", b"\x80\x05garbage",
    pickle.dumps([1, 2, 3]), pickle.dumps({"weights": {}}, protocol=0),
], ids=["text", "binary", "zip", "bad-pickle", "a-list", "protocol-0"])
def test_files_that_are_not_converted_weights_say_what_the_full_read_says(tmp_path, content):
    pkl = tmp_path / "x.pkl"
    pkl.write_bytes(content)
    with pytest.raises(UserError) as full:
        read_d2_pkl(pkl)
    with pytest.raises(UserError) as fast:
        read_d2_meta(pkl)
    assert (fast.value.cause, fast.value.fix) == (full.value.cause, full.value.fix)


@pytest.mark.parametrize("edit,needles", [
    (lambda d: d.__setitem__("arch", 5), ["metadata", "malformed"]),
    (lambda d: d["arch"].__setitem__("depth", 999), ["malformed", "depth 999"]),
])
def test_malformed_metadata_first_is_refused_as_by_the_full_read(tmp_path, edit, needles):
    meta = META.to_dict()
    edit(meta)
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps({META_KEY: meta, "model": _model(), "__author__": "x"}, protocol=5))
    with pytest.raises(UserError) as e:
        read_d2_meta(pkl)
    assert all(n in e.value.cause for n in needles), e.value.cause


def test_metadata_that_does_not_end_within_the_limit_is_refused(tmp_path, spy):
    meta = META.to_dict() | {"extra": {"notes": [f"{i:07d}" * 16 for i in range(20_000)]}}   # ~2.4 MB
    pkl = tmp_path / "long.pkl"
    pkl.write_bytes(pickle.dumps({META_KEY: meta, "model": _model(), "__author__": "x"}, protocol=5))
    with pytest.raises(UserError, match="no readable infomin-det metadata.*1 MiB"):
        read_d2_meta(pkl)
    assert spy == [] and Counting.total < 2**20 + 64 * 2**10


# ---------------------------------------------------------------------------------------------
# the streaming reader itself

def _first(obj, protocol=pickle.HIGHEST_PROTOCOL, **kw):
    return pickle_first_entry(io.BytesIO(pickle.dumps(obj, protocol=protocol)), "m", **kw)


@pytest.mark.parametrize("protocol", range(1, pickle.HIGHEST_PROTOCOL + 1))
def test_first_entry_in_every_binary_protocol(protocol):
    value = {"a": [1, 2.5, (3, "x")], "b": {"c": None, "d": True}, "e": b"\x00", "g": [[]], "h": 2**70}
    assert _first({"m": value, "model": {"w": np.ones(3)}}, protocol) == (True, value)


def test_first_entry_spanning_frames_and_referring_back_to_the_key():
    key = "m"
    value = {"self": key, "long": [f"{i:05d}" * 20 for i in range(1500)], "same": None}
    value["same"] = value["long"]                        # a memo reference inside the value
    ok, got = _first({key: value, "model": {}})
    assert ok and got == value and got["same"] is got["long"] and got["self"] == key


@pytest.mark.parametrize("obj", [
    {"model": {}, "m": {"a": 1, "b": 2}},                # another first key: the old layout
    [{"m": {"a": 1, "b": 2}}],                           # not a dict
    {"m": {"a": 1}, "model": {}},                        # one item: written with SETITEM, not a batch
    {"m": [1, 2], "model": {}},                          # a value that is not a dict
    {"m": {"a": 1, "b": 2}},                             # one entry in all
])
def test_first_entry_not_laid_out_as_expected_asks_for_a_full_read(obj):
    assert _first(obj) == (False, None)
    assert _first(obj, protocol=0) == (False, None)


@pytest.mark.parametrize("n", [999, 1000, 1001, 2000, 2500])
def test_first_entry_of_many_items_ends_where_the_pickler_ended_it(n):
    """CPython's C pickler closes a dict with a short batch (empty after 1000·k items); the pure-Python
    one writes a last lone item with SETITEM and nothing after 1000·k items, which a reader cannot
    tell from the next entry: those ask for a full read."""
    value = {str(i): i for i in range(n)}
    obj = {"m": value, "model": {}}
    assert _first(obj) == (True, value)
    f = io.BytesIO()
    pickle._Pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    f.seek(0)
    assert pickle_first_entry(f, "m") == ((False, None) if n % 1000 in (0, 1) else (True, value))


def test_first_entry_checks_the_key_that_follows():
    obj = {"m": {"a": 1, "b": 2}, "weights": {}}
    assert _first(obj) == (True, {"a": 1, "b": 2})
    assert _first(obj, then="model") == (False, None)
    assert _first({"m": {"a": 1, "b": 2}, "model": {}}, then="model") == (True, {"a": 1, "b": 2})


def test_first_entry_admits_numpy_scalars_and_refuses_other_globals(tmp_path):
    assert _first({"m": {"a": np.float32(1.5), "b": 2}, "model": {}})[1]["a"] == np.float32(1.5)
    marker = tmp_path / "owned"
    with pytest.raises(PickleGlobalError, match="not allowed"):
        _first({"m": {"a": Evil(marker), "b": 2}, "model": {}})
    assert not marker.exists()


def test_first_entry_reads_no_more_than_its_limit():
    raw = pickle.dumps({"m": {"a": "x" * 5000, "b": 2}, "model": {}})
    f = io.BytesIO(raw)
    with pytest.raises(PickleLimitError):
        pickle_first_entry(f, "m", limit=1000)
    assert f.tell() <= 1000
    with pytest.raises(EOFError):
        pickle_first_entry(io.BytesIO(raw[:3000]), "m")
    assert pickle_first_entry(io.BytesIO(raw), "m", limit=len(raw))[0]
