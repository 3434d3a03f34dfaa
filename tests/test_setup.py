"""What `make setup` promises: `.venv/bin/dvc repro` runs the stages with this venv's python."""

import subprocess
import sys
from pathlib import Path


def test_the_venv_puts_its_own_python_first_on_path_for_child_processes():
    which = "import shutil; print(shutil.which('python'))"
    out = subprocess.run([sys.executable, "-c", which], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out, "no python on PATH: scripts/venv_path.pth is not installed (run `make setup`)"
    assert Path(out).parent == Path(sys.executable).parent
