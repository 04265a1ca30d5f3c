"""The package's layers: cli -> commands -> capabilities (training, video, arbitrary) -> model -> io -> errors.

Every import of every module counts, at module level or inside a function: no module imports a layer above its own
or a capability beside its own, and no chain of imports comes back to where it started. The command line, the
training config and the architecture load without torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from helpers import REPOSITORY

PACKAGE = REPOSITORY / "styler"
# Lower numbers are lower layers; a module may import its own package's modules and lower layers.
LAYERS = {
    "styler": 0,
    "styler.errors": 0,
    "styler.io": 1,
    "styler.devices": 1,
    "styler.memory": 1,
    "styler.model": 2,
    "styler.vgg16": 2,  # the ImageNet encoder both capabilities use: training's loss, arbitrary's encoder
    "styler.training": 3,
    "styler.video": 3,
    "styler.arbitrary": 3,
    "styler.commands": 4,
    "styler.cli": 5,
    "styler.__main__": 6,
}


def module_names() -> dict[str, bool]:
    """Every styler module, and whether it is a package (__init__)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPOSITORY).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        names[".".join(parts[:-1] if is_package else parts)] = is_package
    return names


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports_of(module: str, modules: dict[str, bool]) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ("/__init__.py" if modules[module] else ".py"))
    return imports_in(path.read_text(), module, modules)


def imports_in(source: str, module: str, modules: dict[str, bool]) -> set[str]:
    """The styler modules `source` (of `module`) imports anywhere: at module level, inside functions, and in
    TYPE_CHECKING blocks."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                package = module if modules[module] else module.rsplit(".", 1)[0]
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {module: imports_of(module, modules) for module in modules}


def test_every_module_has_a_layer():
    assert {unit(module) for module in module_names()} <= set(LAYERS)


def test_no_module_imports_upwards_or_a_capability_beside_its_own():
    wrong = [
        f"{module} -> {imported}"
        for module, imported_modules in import_graph().items()
        for imported in imported_modules
        if unit(imported) != unit(module) and LAYERS[unit(imported)] >= LAYERS[unit(module)]
    ]
    assert wrong == []


def test_nothing_but_the_command_line_imports_the_commands():
    importers = {
        module
        for module, imported in import_graph().items()
        if any(unit(name) == "styler.commands" for name in imported) and unit(module) != "styler.commands"
    }
    assert importers == {"styler.cli"}


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    modules = module_names()
    source = "def f():\n    from styler.training.losses import gram_matrix\n    from . import data\n"
    assert imports_in(source, "styler.training.config", modules) == {
        "styler.training.losses",
        "styler.training.data",
    }


def loads_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("arguments", [["--help"], ["train", "--help"], ["stylize", "--help"], ["video", "--help"]])
def test_the_command_line_help_loads_no_torch(arguments):
    code = f"from styler.cli import app\ntry:\n    app({arguments!r})\nexcept SystemExit:\n    pass"
    assert not loads_torch(code)


def test_the_training_config_and_the_architecture_load_no_torch():
    assert not loads_torch("import styler.training.config, styler.model.architecture, styler.model.model_files")
