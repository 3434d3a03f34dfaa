"""dvc.yaml is the map of the code: each stage depends on exactly the package modules its entry
point imports (transitively, lazy imports inside functions included) and on the params it reads,
so a change reruns the stages it can change and no others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mnist_vae"
PACKAGE_DIR = REPO_ROOT / "src" / PACKAGE
STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def imported_modules(path: Path) -> set[str]:
    """The package modules a file imports anywhere in it (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == PACKAGE:  # `from mnist_vae import tracking`
                names = [f"{PACKAGE}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name.split(".")[1] for name in names
                  if name.startswith(f"{PACKAGE}.") and len(name.split(".")) > 1}
    return found


def import_closure(entry: Path) -> set[str]:
    """Every package module `entry` reaches through imports."""
    seen: set[str] = set()
    todo = sorted(imported_modules(entry))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = PACKAGE_DIR / f"{module}.py"
        assert path.is_file(), f"{entry.name} imports {PACKAGE}.{module}, which does not exist"
        seen.add(module)
        todo += sorted(imported_modules(path) - seen)
    return seen


def code_deps(stage: dict) -> tuple[set[str], set[str]]:
    """The package modules and the stage files a stage's deps name."""
    deps = [str(d) for d in stage.get("deps", [])]
    prefix = f"src/{PACKAGE}/"
    modules = {d.removeprefix(prefix).removesuffix(".py") for d in deps if d.startswith(prefix)}
    stage_files = {d for d in deps if d.startswith("stages/")}
    return modules, stage_files


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_its_import_closure(name):
    stage = STAGES[name]
    entry = f"stages/{name}.py"
    assert stage["cmd"] == f"python {entry}", f"{name}: expected cmd `python {entry}`"
    deps = [str(d) for d in stage.get("deps", [])]
    twice = sorted({d for d in deps if deps.count(d) > 1})
    assert not twice, f"dvc.yaml stage {name}: deps listed twice {twice}; run `make deps`"
    modules, stage_files = code_deps(stage)
    assert stage_files == {entry}, f"{name}: deps should name {entry} and no other stage file"
    closure = import_closure(REPO_ROOT / entry)
    missing, extra = sorted(closure - modules), sorted(modules - closure)
    assert not missing and not extra, (
        f"dvc.yaml stage {name}: add deps {[f'src/{PACKAGE}/{m}.py' for m in missing]}, "
        f"remove deps {[f'src/{PACKAGE}/{m}.py' for m in extra]} (the closure of {entry} is "
        f"{sorted(closure)})")


def test_the_closure_follows_lazy_and_package_imports(tmp_path):
    entry = tmp_path / "stage.py"
    entry.write_text("from mnist_vae import tracking\n"
                     "def main():\n    import mnist_vae.training\n")
    assert imported_modules(entry) == {"tracking", "training"}
    assert {"tracking_store", "provenance", "config", "files"} <= import_closure(entry)
    assert {"checkpoints", "inputs", "model"} <= import_closure(entry)


# What each stage must not depend on: code that cannot change its outputs.
MUST_NOT_DEPEND = {
    "train": {"registry", "continuation", "evaluation", "rendering", "classifier"},
    "evaluate": {"tracking", "tracking_store", "registry", "continuation", "provenance",
                 "rendering"},
    "render": {"tracking", "tracking_store", "registry", "continuation", "provenance", "evaluation",
               "classifier"},
    "train_classifier": {"tracking", "tracking_store", "registry", "model"},
}


@pytest.mark.parametrize("name", sorted(MUST_NOT_DEPEND))
def test_logging_registration_and_other_stages_code_stay_out_of_a_stage(name):
    closure = import_closure(REPO_ROOT / f"stages/{name}.py")
    assert not closure & MUST_NOT_DEPEND[name], (
        f"{name} imports {sorted(closure & MUST_NOT_DEPEND[name])}: changing them would rerun it")


def test_only_the_tracking_modules_import_mlflow():
    allowed = {"tracking_store", "tracking", "continuation", "registry",
               "tracking_auth"}  # tracking_auth: server side
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        uses = any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "mlflow")
            for n in ast.walk(tree))
        if path.stem not in allowed:
            assert not uses, f"{path.name} imports mlflow; only {sorted(allowed)} may"


def test_no_import_cycles_in_the_package():
    graph = {p.stem: imported_modules(p) for p in PACKAGE_DIR.glob("*.py")}

    def visit(module: str, path: tuple[str, ...]) -> None:
        for child in sorted(graph.get(module, ())):
            assert child not in path, f"import cycle: {' -> '.join((*path, child))}"
            visit(child, (*path, child))

    for module in sorted(graph):
        visit(module, (module,))


def test_every_module_says_what_it_owns_on_line_one():
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.splitlines()[0].strip(), f"{path.name}: no one-line docstring"


def params_named(path: Path) -> tuple[set[str], set[str]]:
    """The params sections (`params.evaluate`) and paths keys (`params.paths.metrics`, or
    `paths.metrics` after `paths = params.paths`) a stage file names."""
    sections, paths = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        inner = node.value
        on_params = isinstance(inner, ast.Name) and inner.id == "params"
        on_paths = (isinstance(inner, ast.Name) and inner.id == "paths") or (
            isinstance(inner, ast.Attribute) and inner.attr == "paths"
            and isinstance(inner.value, ast.Name) and inner.value.id == "params")
        if on_params and node.attr != "paths":
            sections.add(node.attr)
        elif on_paths:
            paths.add(node.attr)
    return sections, paths


# paths the library reads from the `params` a stage hands it, not named in the stage file
READ_IN_THE_LIBRARY = {
    "register": {"run_id",  # continuation.reopened_run: the training run's pointer
                 "data"},  # tracking.log_identity: the data's checksum, for a new run
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_params_name_what_the_stage_file_reads(name):
    declared = [str(p) for p in STAGES[name].get("params", [])]
    sections, paths = params_named(REPO_ROOT / f"stages/{name}.py")
    paths |= READ_IN_THE_LIBRARY.get(name, set())
    for section in sorted(sections):
        assert any(p == section or p.startswith(f"{section}.") for p in declared), (
            f"stages/{name}.py reads params.{section}; dvc.yaml's {name} params miss it")
    declared_paths = {p.removeprefix("paths.") for p in declared if p.startswith("paths.")}
    assert paths <= declared_paths, (
        f"dvc.yaml's {name} params miss {sorted(f'paths.{k}' for k in paths - declared_paths)}")
    assert declared_paths <= paths, (
        f"dvc.yaml's {name} params list {sorted(f'paths.{k}' for k in declared_paths - paths)}"
        f", which stages/{name}.py does not use")
