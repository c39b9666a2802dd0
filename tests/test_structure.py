"""The project's shape: no import circle, no module over 500 lines, a test file per module.

A circle means two modules own one job between them; each module here should be importable
after the ones it builds on, so the graph of `drn_tf`, `export` and `benchmarks` modules must
be acyclic. Read from the source with `ast`, so lazy imports inside functions count too.
Tests mirror modules: drn_tf/<m>.py is tested in tests/test_<m>.py, export/<m>.py in
tests/test_export_<m>.py.
"""

import ast
from pathlib import Path

from helpers import ROOT

PACKAGES = ("drn_tf", "export", "benchmarks")
#: The library's packages: their modules keep to MAX_LINES and each has a test file of its own.
LIBRARY = ("drn_tf", "export")
MAX_LINES = 500
#: Library modules without a test file of their own; keep this list short.
WITHOUT_OWN_TESTS = {
    "export.tf_trt",  # needs a TensorFlow built with TensorRT and a GPU: none here or in CI
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in found & known if module != name and "." in module}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path of module names, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_among_the_project_modules():
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    assert graph["drn_tf.training"], "the reader must see the training module's imports"
    assert cycle(graph) is None, " → ".join(cycle(graph) or [])


def library_modules() -> dict[str, Path]:
    return {name: path for name, path in modules().items() if name.split(".")[0] in LIBRARY}


def test_no_library_module_is_over_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in library_modules().items()}
    assert sizes["drn_tf.training"] > 100, "the counter must see the training module's lines"
    over = sorted((name, lines) for name, lines in sizes.items() if lines > MAX_LINES)
    assert not over, f"over {MAX_LINES} lines: " + ", ".join(f"{n} ({lines})" for n, lines in over)


def test_every_library_module_has_its_own_test_file():
    def test_file(name: str) -> Path:
        package, module = name.split(".")
        return ROOT / "tests" / f"test_{'export_' if package == 'export' else ''}{module}.py"

    found = [name for name in library_modules() if "." in name and not name.endswith("__main__")]
    assert "drn_tf.training" in found and "export.onnx" in found
    missing = [
        f"{name} (no {test_file(name).relative_to(ROOT)})"
        for name in found
        if name not in WITHOUT_OWN_TESTS and not test_file(name).is_file()
    ]
    assert not missing, "modules without their own test file: " + ", ".join(missing)
    stale = sorted(n for n in WITHOUT_OWN_TESTS if n not in found or test_file(n).is_file())
    assert not stale, "on WITHOUT_OWN_TESTS but gone or with a test file now: " + ", ".join(stale)
