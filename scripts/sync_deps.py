"""Rewrite each stage's module deps in dvc.yaml to the stage's import closure."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_dvc_map import import_closure  # noqa: E402

STAGE = re.compile(r"^  ([a-z_]+):\s*$")
# a module dep line; a comment after it does not end the block
MODULE_DEP = re.compile(r"^      - src/mnist_vae/\S+\.py\s*(#.*)?$")


def synced(lines: list[str]) -> list[str]:
    """`lines` of dvc.yaml, each block of module deps replaced by its stage's import closure."""
    out, stage, i = [], None, 0
    while i < len(lines):
        if match := STAGE.match(lines[i]):
            stage = match.group(1)
        if MODULE_DEP.match(lines[i]):
            while i < len(lines) and MODULE_DEP.match(lines[i]):
                i += 1
            closure = sorted(import_closure(ROOT / "stages" / f"{stage}.py"))
            out += [f"      - src/mnist_vae/{module}.py\n" for module in closure]
            continue
        out.append(lines[i])
        i += 1
    return out


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    before = path.read_text()
    after = "".join(synced(before.splitlines(keepends=True)))
    path.write_text(after)
    state = "updated" if after != before else "already match the imports"
    print(f"dvc.yaml: module deps {state}")
