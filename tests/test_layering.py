"""The layering ``tools/import_graph.py`` declares holds: statically over the checkout's imports, and at
run time (a fresh interpreter imports every module of a layer and must not have loaded what
``IMPORTS_WITHOUT`` says it never needs: report/launch/core without torch or detectron2, convert and
pretrain without detectron2). A fake tree with one bad import of each kind shows the check fails.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "import_graph.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("import_graph", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ig = _load_tool()


def test_the_checkout_keeps_the_declared_layering():
    problems = ig.check()
    assert problems == [], "imports against the layering (tools/import_graph.py):\n" + "\n".join(problems)


def test_the_command_prints_the_graph_and_checks_it():
    run = [sys.executable, str(TOOL)]
    checked = subprocess.run(run + ["--check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and checked.stdout.strip() == "layering: ok", checked.stdout + checked.stderr
    text = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "\ntop-level packages:\n" in text and "  pretrain -> infomin_det\n" in text
    assert "  infomin_det.cli ~> pretrain\n" in text            # the subcommand table names it, lazily
    assert "  infomin_det.convert -> infomin_det.pretrain_format\n" in text
    dot = subprocess.run(run + ["--dot"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert dot.startswith("digraph imports {") and '"pretrain" -> "infomin_det.launch"' in dot


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_kind_of_bad_import_is_reported_with_its_line(tmp_path, monkeypatch):
    """One bad edge of each kind in a small tree shaped like the real one, and allowed ones beside them."""
    _write(tmp_path, {
        "infomin_det/__init__.py": "",
        "infomin_det/errors.py": "from infomin_det import atomic\n",                    # cycle errors <-> atomic
        "infomin_det/atomic.py": "def f():\n    from infomin_det.errors import X\n",
        "infomin_det/convert/__init__.py": "",
        "infomin_det/convert/layouts.py": ("import torch\nfrom infomin_det.engine.spec import S\n"   # torch ok
                                           "PRETRAIN_FORMAT = 'infomin-det/pretrain'\n"),
        "infomin_det/engine/__init__.py": "",
        "infomin_det/engine/spec.py": "import detectron2\nfrom infomin_det.launch import worker\n",     # allowed
        "infomin_det/report/__init__.py": "import torch\n",
        "infomin_det/launch/__init__.py": "def worker():\n    return 'pretrain.train:pretrain_worker'\n",
        "infomin_det/data/__init__.py": "",
        "infomin_det/data/mnist.py": "",
        "infomin_det/data/photos.py": "",
        "infomin_det/data/composites.py": "from infomin_det.data import photos\n",
        "infomin_det/demo/__init__.py": "import pretrain.train\n",
        "infomin_det/demo/pipeline.py": "def run():\n    from pretrain.train import Spec\n",  # lazily: allowed
        "infomin_det/newthing/__init__.py": "",
        "pretrain/__init__.py": "",
        "pretrain/train.py": "from infomin_det.launch import worker\n\ndef f():\n    from detectron2 import model_zoo\n",
        "pretrain/checkpoint.py": "FORMAT = 'infomin-det/pretrain'\n",
        "pretrain/views/__init__.py": "",
        "pretrain/views/moving_mnist.py": "from infomin_det.data import mnist, photos\n",
        "tools/x.py": "from infomin_det.engine import spec\n",
        "transfer_configs/__init__.py": "",
    })
    monkeypatch.setattr(ig, "ROOT", tmp_path)
    problems = ig.check()
    expected = [
        "import cycle between units: infomin_det.atomic <-> infomin_det.errors",
        "infomin_det.data.mnist: in the shared layer 'data' but imported only by pretrain.views.moving_mnist",
        "format tag 'infomin-det/pretrain' defined 2 times (infomin_det/convert/layouts.py:3, pretrain/checkpoint.py:1)",
        "infomin_det.newthing: in no layer",
        "infomin_det.convert -> infomin_det.engine: layer 'convert' may not use layer 'engine': "
        "infomin_det/convert/layouts.py:2",
        "infomin_det.launch -> pretrain: layer 'launch' may not use layer 'pretrain': "
        "infomin_det/launch/__init__.py:2 (string)",
        "infomin_det.demo -> pretrain: infomin_det reaches pretrain only lazily",
        "infomin_det.report -> torch: layer 'report' imports without torch",
        "pretrain -> detectron2: pretrain never imports detectron2: pretrain/train.py:4 (function)",
    ]
    for want in expected:
        assert any(want in p for p in problems), f"not reported: {want}\ngot:\n" + "\n".join(problems)
    assert len(problems) == len(expected), "\n".join(problems)   # and nothing else: the allowed edges pass
    demo = next(p for p in problems if p.startswith("infomin_det.demo -> pretrain"))
    assert demo.endswith("infomin_det/demo/__init__.py:1")          # the lazy import in pipeline.py is not named
    text = ig.render_text(ig.graph())
    assert "  infomin_det.launch ~> pretrain\n" in text and "  infomin_det.atomic -> infomin_det.errors  (f)\n" in text
    assert "  infomin_det.demo -> pretrain\n" in text              # module level and lazily: module level shows


def _layer_modules(layer: str) -> list[str]:
    return sorted(m for m in ig.modules() if ig.layer_of(ig.unit_of(m)) == layer and m.split(".")[-1] != "__main__")


@pytest.mark.parametrize("layer", sorted(ig.IMPORTS_WITHOUT))
def test_importing_a_layer_loads_none_of_what_it_never_needs(layer):
    """Transitively, as a user's interpreter would: every module of the layer, then sys.modules."""
    mods, never = _layer_modules(layer), ig.IMPORTS_WITHOUT[layer]
    assert mods, layer
    code = ("import importlib, json, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted({{k.split('.')[0] for k in sys.modules}} & {set(never)!r})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]) == [], f"importing layer {layer!r} ({', '.join(mods)}) loaded these"
