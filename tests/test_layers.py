"""The suite's layers: no import cycle among its own modules, no `sys.path` edit anywhere, and every script runs as
written from any folder because the project is installed (pip install -e ., pyproject's packages).

The import graph is read from the source (every import statement, module- or function-level, relative imports
resolved), so a cycle fails here even when a lazy import would hide it at run time.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the project's own packages, whose modules must not import each other in a circle
PACKAGES = ("pcl", "experiments", "ablations", "analysis", "slurm", "bench")
#: folders that are not the project's source
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules"}


def _project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under PACKAGES (a package is named by its __init__.py)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if SKIP_DIRS & set(path.relative_to(ROOT).parts):
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement of `path` may load (relative imports resolved against `module`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (a name resolves to its longest known module prefix)."""
    modules = _project_modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(n) for n in _imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan, iterative), each sorted. A package and one of
    its own modules alone (its __init__ re-exporting the module, the module importing the package) do not count."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return [g for g in groups if not (len(g) == 2 and g[1].startswith(g[0] + "."))]


def test_the_checker_finds_a_cycle_and_ignores_a_package_with_its_own_module():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"p": {"p.x"}, "p.x": {"p"}}) == []
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert {"pcl.engine", "pcl.step", "pcl.checkpoint", "experiments.registry", "analysis.tables"} <= set(graph)
    found = cycles(graph)
    assert not found, "import cycles (move code along its seam; a lazy import does not count as a fix):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_checkpoint_io_is_a_leaf_and_the_fast_path_does_not_import_the_loop():
    graph = import_graph()
    # a leaf: whatever of the suite it imports (a stdlib-only helper such as pcl.fsio) imports nothing further
    assert all(not graph[m] for m in graph["pcl.checkpoint"]), {m: graph[m] for m in graph["pcl.checkpoint"]}
    assert "pcl.engine" not in graph["pcl.fastpath"]
    assert "pcl.runner" not in graph["pcl.distributed"]
    assert "pcl.engine" not in graph["pcl.methods.kd"]


def _sys_path_edits(path: Path) -> list[str]:
    """`file:line` of each edit of the import path in `path`: a call on sys.path (insert, append, ...), an
    assignment or deletion of sys.path or of an item of it, `from sys import path`, site.addsitedir, or pytest's
    monkeypatch.syspath_prepend."""

    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    def target_is_sys_path(target: ast.AST) -> bool:
        return is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value))

    found: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hit = is_sys_path(node.func.value) or node.func.attr in ("syspath_prepend", "addsitedir")
        elif isinstance(node, (ast.Assign, ast.Delete)):
            hit = any(target_is_sys_path(t) for t in node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            hit = target_is_sys_path(node.target)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            hit = any(alias.name == "path" for alias in node.names)
        if hit:
            found.append((node.lineno, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return [where for _, where in sorted(found)]


def _python_files() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        files += [Path(folder) / n for n in sorted(names) if n.endswith(".py")]
    return files


def test_the_sys_path_check_sees_the_usual_edits(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    sample = tmp_path / "script.py"
    sample.write_text("import sys\nsys.path.insert(0, '..')\nsys.path = ['x']\nsys.path[0:0] = ['y']\n"
                      "sys.path += ['z']\nprint(sys.path)\n")
    assert _sys_path_edits(sample) == ["script.py:2", "script.py:3", "script.py:4", "script.py:5"]


def test_no_file_edits_sys_path():
    edits = [e for f in _python_files() for e in _sys_path_edits(f)]
    assert not edits, ("sys.path edited (the project is installed: pip install -e . makes pcl, experiments, "
                       "ablations, analysis, slurm and bench importable from any folder):\n" + "\n".join(edits))


@pytest.mark.parametrize("script", ["analysis/make_tables.py", "slurm/launch_all.py"])
def test_a_script_runs_as_written_from_another_folder(script, tmp_path):
    """`python SCRIPT --help` from another folder and without PYTHONPATH: the installed project is importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_a_cifar_run_imports_no_torchvision_and_records_its_version_with_the_build():
    """torchvision is imported where it is used (ImageNet backbones and data, the CIFAR download): its import cost
    ~2 s (its ops import torch._dynamo) in every run and test worker through the backbone registry. The run still
    records its version as torchvision gives it, build tag included."""
    script = (
        "import sys\n"
        "from sacred import Experiment\n"
        "from pcl.methods import build_method\n"
        "from pcl.runner import environment_info, package_version\n"
        "from pcl.tracking.run import _add_dependencies\n"
        "build_method('pcl', 'tiny_resnet8', 4, peers=2)\n"
        "ex = Experiment('x', save_git_info=False, interactive=True)\n"
        "_add_dependencies(ex)\n"
        "info = environment_info()\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
        "import torchvision\n"
        "recorded = {d.name: d.version for d in ex.dependencies}\n"
        "assert info['torchvision'] == recorded['torchvision'] == torchvision.__version__, (info, recorded)\n"
        "assert package_version('torchvision') == torchvision.__version__\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_package_version_is_the_modules_own_else_its_metadatas():
    """package_version reads a package's version.py (torch's and torchvision's carry the build tag); a module
    without __version__, or a single-file module, falls back to the package metadata."""
    import importlib.metadata

    import torch

    from pcl.runner import package_version

    assert package_version("torch") == torch.__version__
    assert package_version("typing_extensions") == importlib.metadata.version("typing_extensions")  # no __version__
    assert package_version("six") == importlib.metadata.version("six")  # one file: no version.py beside it
