"""The layout of DESIGN.md section 1: one ``lodestar`` namespace, imports that flow one way, no cycles."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
GENERIC_NAMES = ("agents", "envs", "pretrain", "replay", "runtime", "scripts")
MAX_LIBRARY_LINES = 600


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folder(package: str) -> Path:
    """The folder ``pyproject.toml`` maps ``package`` to (the longest mapped prefix wins, as in setuptools)."""
    mapping: dict[str, str] = setuptools_table()["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[cut:])
    raise AssertionError(f"package {package} has no package-dir mapping")


def library_modules() -> dict[str, Path]:
    """Every module of the installed distribution: dotted name -> file."""
    modules: dict[str, Path] = {}
    for package in setuptools_table()["packages"]:
        folder = package_folder(package)
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def imported_names(path: Path, module: str) -> Iterator[tuple[str, str | None]]:
    """``(module, name)`` for every import in the file, at any depth (lazy imports count too)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.stem == "__init__"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from pkg import sub`` points at ``pkg.sub``)."""
    modules = library_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for base, item in imported_names(path, name):
            target = f"{base}.{item}" if item and f"{base}.{item}" in modules else base
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in graph:
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_cycle_finder_sees_a_cycle_and_a_clean_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles_between_project_modules() -> None:
    graph = import_graph()
    assert len(graph) > 80  # the walk found the project, not an empty folder
    assert cycles(graph) == []


def test_every_package_is_lodestar_and_every_folder_is_packaged() -> None:
    table = setuptools_table()
    listed = set(table["packages"])
    assert all(name == "lodestar" or name.startswith("lodestar.") for name in listed)
    found = {"lodestar"}
    for top in table["package-dir"]:
        if top == "lodestar":
            continue
        root = package_folder(top)
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root)
            found.add(".".join([top, *relative.parts]))
    assert found == listed, "pyproject.toml [tool.setuptools] packages must list every package folder"


# Allowed project imports per package (DESIGN.md section 1): imports flow one way.
ALLOWED = {
    "lodestar.runtime": ("lodestar.runtime",),
    "lodestar.envs": ("lodestar.runtime", "lodestar.envs"),
    "lodestar.replay": ("lodestar.runtime", "lodestar.replay"),
    "lodestar.agents": ("lodestar.runtime", "lodestar.envs", "lodestar.replay", "lodestar.agents"),
}
NAV = "lodestar.envs.nav"
NAV_ALLOWED = {
    "data": ("data",),
    "world": ("data", "world"),
    "sim": ("data", "sim"),
    "eval": ("data", "eval"),
    "perception": ("data", "world", "perception"),
}


def allowed_prefixes(module: str) -> tuple[str, ...] | None:
    for sub, uses in NAV_ALLOWED.items():
        if module.startswith(f"{NAV}.{sub}"):
            return ("lodestar.runtime", "lodestar.envs.base", *(f"{NAV}.{u}" for u in uses))
    for package, uses in ALLOWED.items():
        if module.startswith(package):
            return uses
    return None  # lodestar.pretrain and the namespace root may use everything


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, targets in import_graph().items():
        prefixes = allowed_prefixes(module)
        if prefixes is None:
            continue
        wrong += [f"{module} -> {t}" for t in targets if not t.startswith(prefixes)]
    assert wrong == []


def test_simulator_needs_neither_the_world_generator_nor_perception() -> None:
    graph = import_graph()
    sim = [m for m in graph if m.startswith(f"{NAV}.sim")]
    assert sim
    reached, todo = set(), list(sim)
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert not [m for m in reached if m.startswith((f"{NAV}.world", f"{NAV}.perception"))]


def project_python_files() -> list[Path]:
    folders = [*GENERIC_NAMES, "lodestar", "tests"]
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_no_generic_top_level_imports_and_no_path_edits() -> None:
    wrong = []
    for path in project_python_files():
        wrong += [
            f"{path.relative_to(ROOT)}: imports {base}; use lodestar.{base}"
            for base, _ in imported_names(path, "x")
            if base.split(".")[0] in GENERIC_NAMES
        ]
        if path.is_relative_to(ROOT / "scripts") and "sys.path" in path.read_text():
            wrong.append(f"{path.relative_to(ROOT)}: edits sys.path; scripts import the installed package")
    assert wrong == []


def test_no_library_module_is_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in library_modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LIBRARY_LINES} == {}


def test_the_wheel_installs_only_the_lodestar_namespace_and_works_outside_the_repository(
    tmp_path: Path,
) -> None:
    wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # The files git would commit (tracked, or new and not ignored), copied: a stale build/ folder of the
    # working tree cannot leak into the wheel, and a source file that .gitignore hides is missed here too.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True
    )
    (wheel,) = wheels.glob("lodestar-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        assert "lodestar/envs/nav/sim/env.py" in archive.namelist()
        assert "lodestar/agents/dqn/atari57_random_human.csv" in archive.namelist()
    assert {top for top in tops if not top.endswith(".dist-info")} == {"lodestar"}
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)

    def run(code: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(target)}
        return subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    imported = run(
        "import gymnasium, lodestar.envs.nav.sim, lodestar.agents.dqn, lodestar.replay, lodestar.pretrain\n"
        "print(lodestar.envs.nav.sim.__file__)\n"
        "print('Lodestar/Atari-v0' in gymnasium.registry, 'Lodestar/Nav-v0' in gymnasium.registry)"
    )
    assert imported.returncode == 0, imported.stderr
    module_file, registered = imported.stdout.splitlines()
    assert Path(module_file).is_relative_to(target) and registered == "True True"
    for generic in ("agents", "envs", "runtime", "replay", "pretrain"):
        assert run(f"import {generic}").returncode != 0, f"{generic} is importable as a top-level package"
