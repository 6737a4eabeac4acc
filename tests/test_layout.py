"""The project's fixed layout: the top level, a core that imports nothing above it, packaging."""
import ast
import os
import subprocess
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "resnet_backbones")
CORE = ("modeling", "weights")
# Layers above the core; the core may import the leaf module resnet_backbones.errors and itself.
ABOVE = ("config", "d2", "tv", "data", "tools", "builders", "solver", "precision", "inference", "divergence",
         "checkpoints", "hints", "predictor", "export", "train_net", "model_zoo", "benchmark", "pretrain")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str):
    """Every module a file imports, at any depth of its code (functions included), resolved to absolute names."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for a in node.names:  # `from . import config` imports a module
                yield f"{mod}.{a.name}", node.lineno


def _python_files(folder: str):
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


def test_top_level_is_the_design_cards():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    top = {p.split("/")[0] for p in tracked.stdout.splitlines()}
    assert top == {"pyproject.toml", "README.md", "resnet_backbones", "configs", "tools", "tests", ".ci",
                   ".gitignore"}, top


@pytest.mark.parametrize("layer", CORE)
def test_core_imports_nothing_above_it(layer):
    forbidden = tuple(f"resnet_backbones.{m}" for m in ABOVE) + ("tools",)
    bad = []
    for path in _python_files(os.path.join(PACKAGE, layer)):
        for mod, line in _imports(path):
            if mod in forbidden or mod.startswith(tuple(f + "." for f in forbidden)):
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {mod}")
            if mod == "resnet_backbones":
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports the package root (it imports config and d2)")
    assert not bad, "\n".join(bad)


def test_every_module_is_in_a_layer():
    """A new module or subpackage of resnet_backbones must be named above (in the core or above it), so that
    the core's import check covers it: ``benchmark`` was once missing from the list."""
    names = {os.path.splitext(n)[0] for n in os.listdir(PACKAGE)
             if (n.endswith(".py") and n != "__init__.py") or os.path.isfile(os.path.join(PACKAGE, n, "__init__.py"))}
    assert names - set(CORE) - set(ABOVE) - {"errors"} == set()


def test_errors_module_is_a_leaf():
    assert [m for m, _ in _imports(os.path.join(PACKAGE, "errors.py")) if m.startswith("resnet_backbones")] == []


def test_import_graph_has_no_cycle():
    """No module of the package imports, at any depth (lazy imports in functions included), one that
    imports it back, directly or through others: each module sits above the ones it uses."""
    import graphlib

    files = {_module_name(p): p for p in _python_files(PACKAGE)}
    graph = {name: {m for m, _ in _imports(path) if m in files and m != name} for name, path in files.items()}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_import_checker_sees_lazy_imports(tmp_path):
    # the scan above must see an import inside a function, and resolve relative ones
    f = tmp_path / "resnet_backbones" / "weights" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text("def f():\n    from ..config import ConfigError\n")
    global ROOT
    saved, ROOT = ROOT, str(tmp_path)
    try:
        assert ("resnet_backbones.config", 2) in list(_imports(str(f)))
    finally:
        ROOT = saved


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_pyproject_lists_every_package_and_caps_no_dependency():
    meta = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = {_module_name(os.path.join(root, "__init__.py")) for root, _, files in os.walk(PACKAGE)
             if "__init__.py" in files and "__pycache__" not in root}
    assert listed == found | {"resnet_backbones.configs"}
    assert meta["tool"]["setuptools"]["package-dir"] == {"resnet_backbones.configs": "configs"}
    capped = [d for d in meta["project"]["dependencies"] if "<" in d or "==" in d]
    assert not capped, f"upper bounds without a measured break: {capped}"
