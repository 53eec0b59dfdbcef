"""The project's shape: two modules at the root, the rest in fmlab, whose imports point down
(the contracts in .importlinter: layers, no cycles)."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_the_package_layers_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_only_the_two_named_modules_stand_at_the_root():
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["fashion_mnist_cnn.py",
                                                          "visualization_utils.py"]
