"""The house's floor plan: `petals/` (what a kernel runs) never imports the local side, the local
side uses `petals` only through the surface `petals/__init__.py` states, and no import circle
runs through `petals/`, at module level or inside a function."""

import ast
import os

import petals

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_SIDE = ("kit", "build", "tests", "benchmarks")


def imported_names(path):
    """Every dotted module name an import statement anywhere in `path` names, with the names
    `from X import a, b` takes from X as X.a and X.b (a module or an attribute)."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files(folder):
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".py"))


def petals_modules():
    """{module name: file} for every module of the kernel package."""
    folder = os.path.join(REPOSITORY, "petals")
    return {
        os.path.splitext(os.path.basename(path))[0]: path
        for path in python_files(folder)
        if not path.endswith("__init__.py")
    }


def import_graph():
    """{petals module: the petals modules it imports}, imports inside functions included."""
    modules = petals_modules()
    graph = {}
    for module, path in modules.items():
        graph[module] = {
            name.split(".")[1]
            for name in imported_names(path)
            if name.startswith("petals.") and name.split(".")[1] in modules
        } - {module}
    return graph


def reachable(graph, start):
    """The modules `start` imports, directly or through others (itself if in a circle)."""
    found, pending = set(), list(graph[start])
    while pending:
        module = pending.pop()
        if module not in found:
            found.add(module)
            pending.extend(graph[module])
    return found


def circles(graph):
    """Each group of modules that import one another, directly or around a circle."""
    reach = {module: reachable(graph, module) for module in graph}
    found = []
    for module in sorted(graph):
        if module in reach[module] and not any(module in circle for circle in found):
            found.append(sorted(other for other in reach[module] if module in reach[other]))
    return found


def test_the_kernel_package_has_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    """The check above can fail: a circle of three is found, a chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_kernel_package_never_imports_the_local_side():
    offending = [
        f"{os.path.relpath(path, REPOSITORY)} imports {name}"
        for path in python_files(os.path.join(REPOSITORY, "petals"))
        for name in imported_names(path)
        if name.split(".")[0] in LOCAL_SIDE
    ]
    assert offending == []


def test_the_local_side_uses_only_the_surface_petals_states():
    """kit/ and build.py import from petals only the modules and names in petals.SURFACE."""
    local_files = [os.path.join(REPOSITORY, "build.py")]
    local_files += python_files(os.path.join(REPOSITORY, "kit"))
    surface = set(petals.SURFACE)
    outside = sorted(
        f"{os.path.relpath(path, REPOSITORY)} imports {name}"
        for path in local_files
        for name in imported_names(path)
        if name.startswith("petals.") and name.removeprefix("petals.").split(".")[0] not in surface
    )
    assert outside == []


def test_the_kernel_package_holds_only_what_the_notebook_runs():
    """Every module of petals/ is one a built kernel carries: the notebook imports it, directly
    or through others. Local code (runner, launcher, demo data) has no place there."""
    import jupytext

    from kit import kernels

    notebook = jupytext.read(os.path.join(REPOSITORY, "notebooks", "flowers.py"))
    code_cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    carried = {path.stem for path in kernels.package_modules(code_cells)}
    assert sorted(set(petals_modules()) - carried) == []
