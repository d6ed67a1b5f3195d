"""The layering the tree promises: the composition root (`mirror.app`) is imported only by
the entry points, its parts (services, admin, the ecosystem adapters) never import it, and
there is no import cycle among mirror's modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "mirror"
ROOT = "mirror.app"
# Only the entry points build the app: `mirror serve` runs it through `mirror.server`.
ENTRY_POINTS = frozenset({"mirror.server"})
ADAPTER_ROUTES = tuple(
    f"mirror.ecosystems.{path.parent.name}.routes"
    for path in sorted(PACKAGE_DIR.glob("ecosystems/*/routes.py"))
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: Mapping[str, Path] = {
    module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], *, module_level: bool) -> Iterator[ast.stmt]:
    """The statements of `body` run when it runs: with `module_level`, those run on import
    (not function bodies); never the `if TYPE_CHECKING:` branches, which never run."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            if module_level:
                continue
            yield from _statements(statement.body, module_level=module_level)
        elif isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                yield from _statements(statement.body, module_level=module_level)
            yield from _statements(statement.orelse, module_level=module_level)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(statement, field, None)
                if isinstance(children, list):
                    for child in children:
                        if isinstance(child, ast.stmt):
                            yield from _statements([child], module_level=module_level)
                        elif hasattr(child, "body"):  # except handlers, match cases
                            yield from _statements(child.body, module_level=module_level)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The mirror modules an import statement names (a `from` import of a submodule names
    the submodule)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                yield alias.name
        return
    assert node.level == 0, f"{importer}: a relative import; mirror's imports are absolute"
    base = node.module or ""
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            yield f"{base}.{alias.name}"
        elif base in MODULES:
            yield base


def imports(module: str, *, module_level: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for statement in _statements(tree.body, module_level=module_level):
        if isinstance(statement, ast.Import | ast.ImportFrom):
            found.update(_resolve(module, statement))
    found.discard(module)
    return found


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_graph_sees_the_imports_it_must() -> None:
    # The checks below mean something only if the parser finds imports at all.
    assert ADAPTER_ROUTES == (
        "mirror.ecosystems.maven.routes",
        "mirror.ecosystems.npm.routes",
        "mirror.ecosystems.pypi.routes",
    )
    assert "mirror.services" in imports("mirror.app", module_level=True)
    assert "mirror.policy" in imports("mirror.ecosystems.npm.document", module_level=True)
    # A function-level import is seen only when asked for; a TYPE_CHECKING one never.
    assert "mirror.app" not in imports("mirror.server", module_level=True)
    assert "mirror.app" in imports("mirror.server", module_level=False)
    npm_package = imports("mirror.ecosystems.npm", module_level=False)
    assert npm_package == {"mirror.ecosystems.npm.routes"}


def test_import_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_among_mirror_modules() -> None:
    graph = {module: imports(module, module_level=True) for module in MODULES}
    assert import_cycles(graph) == []


def test_no_cycle_hidden_in_a_deferred_import() -> None:
    # An import inside a function (a lazily loaded backend or adapter) must not close a
    # cycle either: that is how the app ↔ adapter cycle used to hide.
    graph = {module: imports(module, module_level=False) for module in MODULES}
    assert import_cycles(graph) == []


def test_no_import_the_graph_cannot_see() -> None:
    # Imports by name at run time (`importlib`, `__import__`) would escape the checks above.
    hidden: list[str] = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import | ast.ImportFrom)
                else []
            )
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            if (
                any(name.split(".")[0] == "importlib" for name in names)
                or (isinstance(node, ast.Name) and node.id == "__import__")
                or (isinstance(node, ast.Attribute) and node.attr == "import_module")
            ):
                hidden.append(module)
    assert hidden == []


def test_only_the_entry_points_import_the_app() -> None:
    importers = {module for module in MODULES if ROOT in imports(module, module_level=False)}
    assert importers == ENTRY_POINTS


def loaded_by_importing(module: str, forbidden: tuple[str, ...]) -> list[str]:
    """The modules of `forbidden` (or inside them) that importing `module` in a fresh
    interpreter loads: what the import really pulls in, not what the source names."""
    code = (
        f"import sys, {module}; "
        f"print('\\n'.join(sorted(m for m in sys.modules "
        f"if any(m == name or m.startswith(name + '.') for name in {forbidden!r}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_a_loaded_forbidden_module_is_seen() -> None:
    assert loaded_by_importing("mirror.ecosystems.npm.routes", ("aiohttp", "mirror.app")) != []


@pytest.mark.parametrize("module", ["mirror.services", "mirror.admin.routes", *ADAPTER_ROUTES])
def test_parts_of_the_app_do_not_import_it(module: str) -> None:
    assert loaded_by_importing(module, (ROOT,)) == []


# The pure core and the ecosystem documents (DESIGN.md's two lowest layers): parse, filter,
# decide and render without I/O. Importing one must load none of the I/O libraries and none
# of the mirror's edges, services or web modules.
PURE_MODULES = (
    "mirror.model",
    "mirror.config",
    "mirror.errors",
    "mirror.flight",
    "mirror.clock",
    "mirror.policy",
    "mirror.risk",
    "mirror.openpgp",
    "mirror.takedowns",
    "mirror.notices",
    "mirror.holds",
    "mirror.versions",
    "mirror.archives",
    "mirror.versiondiff",
    "mirror.osv",
    "mirror.lockfiles",
    "mirror.lockfiles.pins",
    "mirror.lockfiles.npm",
    "mirror.lockfiles.python",
    "mirror.lockfiles.maven",
    "mirror.lockfiles.sbom",
    "mirror.lockfiles.formats",
    "mirror.lockfiles.report",
    "mirror.lockfiles.warming",
    "mirror.hosts",
    "mirror.identity",
    "mirror.outages",
    "mirror.traffic",
    "mirror.ui.session",
    "mirror.reportcells",
    "mirror.admin.parse",
    "mirror.admin.auth",
    "mirror.admin.openapi",
    "mirror.ecosystems.base",
    "mirror.ecosystems.npm.names",
    "mirror.ecosystems.npm.document",
    "mirror.ecosystems.npm.signals",
    "mirror.ecosystems.maven.paths",
    "mirror.ecosystems.maven.document",
    "mirror.ecosystems.maven.signals",
    "mirror.ecosystems.pypi.names",
    "mirror.ecosystems.pypi.negotiation",
    "mirror.ecosystems.pypi.links",
    "mirror.ecosystems.pypi.simple",
    "mirror.ecosystems.pypi.jsonapi",
    "mirror.ecosystems.pypi.wheelmetadata",
    "mirror.ecosystems.pypi.coremetadata",
    "mirror.ecosystems.pypi.signals",
)
IO_MODULES = (
    "sqlite3",
    "aiohttp",
    "aiofiles",
    "redis",
    "prometheus_client",
    "mirror.state",
    "mirror.upstream",
    "mirror.blobs",
    "mirror.artifacts",
    "mirror.metacache",
    "mirror.livepolicy",
    "mirror.ledger",
    "mirror.metrics",
    "mirror.services",
    "mirror.app",
)


def test_the_command_line_loads_no_metrics_before_serve_sets_them_up() -> None:
    # prometheus_client picks its multiprocess mode when first imported: `mirror serve` sets
    # PROMETHEUS_MULTIPROC_DIR before its workers import it, so the command line must not
    # (else /metrics aggregates nothing).
    assert loaded_by_importing("mirror.cli.main", ("prometheus_client",)) == []


def test_the_pure_list_names_real_modules() -> None:
    assert [module for module in PURE_MODULES if module not in MODULES] == []


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_load_no_io_layer(module: str) -> None:
    assert loaded_by_importing(module, IO_MODULES) == []


# The layers of README's layout table, lowest first: a module imports only from its own layer
# or a lower one (function-level imports included).
LAYERS: tuple[tuple[str, ...], ...] = (
    (  # pure core
        "mirror", "mirror.model", "mirror.config", "mirror.errors", "mirror.clock",
        "mirror.flight", "mirror.policy", "mirror.versions", "mirror.osv",
        "mirror.pathgate", "mirror.hosts", "mirror.safetext", "mirror.jsondepth",
        "mirror.inflate", "mirror.budget", "mirror.identity", "mirror.notices", "mirror.outages",
        "mirror.ui.session", "mirror.reportcells", "mirror.traffic", "mirror.holds",
        "mirror.archives", "mirror.versiondiff", "mirror.risk", "mirror.takedowns",
        "mirror.openpgp",
    ),
    (  # ecosystem documents
        "mirror.ecosystems", "mirror.ecosystems.base", "mirror.ecosystems.npm.names",
        "mirror.ecosystems.npm.document", "mirror.ecosystems.npm.signals",
        "mirror.ecosystems.maven.paths",
        "mirror.ecosystems.maven.document", "mirror.ecosystems.maven.signals",
        "mirror.ecosystems.pypi.names",
        "mirror.ecosystems.pypi.negotiation", "mirror.ecosystems.pypi.links",
        "mirror.ecosystems.pypi.simple", "mirror.ecosystems.pypi.jsonapi",
        "mirror.ecosystems.pypi.wheelmetadata",
        "mirror.ecosystems.pypi.coremetadata", "mirror.ecosystems.pypi.signals",
        # pins read from lockfiles and SBOMs (PyPI names normalised as pypi.names does)
        "mirror.lockfiles", "mirror.lockfiles.pins", "mirror.lockfiles.npm",
        "mirror.lockfiles.python", "mirror.lockfiles.maven", "mirror.lockfiles.sbom",
        "mirror.lockfiles.formats", "mirror.lockfiles.report", "mirror.lockfiles.warming",
    ),
    (  # edges
        "mirror.upstream", "mirror.state", "mirror.state.base", "mirror.state.local",
        "mirror.state.redis", "mirror.blobs", "mirror.blobs.store", "mirror.blobs.claims",
        "mirror.metrics", "mirror.files", "mirror.directories", "mirror.workerstatus",
        "mirror.malloc", "mirror.logs", "mirror.forwarded", "mirror.requestbody",
        "mirror.connections", "mirror.responses", "mirror.advisories", "mirror.webhook",
        "mirror.replay",
    ),
    (  # services
        "mirror.metacache", "mirror.livepolicy", "mirror.lastknown", "mirror.servingstate",
        "mirror.ledger", "mirror.statebackup", "mirror.artifacts", "mirror.artifacts.serve",
        "mirror.artifacts.download", "mirror.artifacts.pinning", "mirror.artifacts.passthrough",
        "mirror.services", "mirror.rulechanges", "mirror.feeds",
        "mirror.trafficrecorder", "mirror.holdrecorder", "mirror.takedownwatch",
        "mirror.ecosystems.pypi.derivedmeta",
    ),
    (  # web
        "mirror.ecosystems.npm", "mirror.ecosystems.maven", "mirror.ecosystems.pypi",
        "mirror.ecosystems.npm.routes", "mirror.ecosystems.maven.routes",
        "mirror.ecosystems.pypi.routes", "mirror.admin", "mirror.admin.parse",
        "mirror.admin.auth", "mirror.admin.rules", "mirror.admin.impact", "mirror.admin.routes",
        "mirror.admin.events",
        "mirror.admin.warm",
        "mirror.admin.openapi", "mirror.hotpath", "mirror.app",
        # the dashboard (`/ui/`)
        "mirror.ui", "mirror.ui.render", "mirror.ui.guard", "mirror.ui.routes",
        "mirror.ui.pages", "mirror.ui.downloads",
        "mirror.ui.pages.overview",
        "mirror.ui.pages.queue",
        "mirror.ui.pages.rules",
        "mirror.ui.pages.review",
        "mirror.ui.pages.explain",
        "mirror.ui.pages.impact",
        "mirror.ui.pages.audit",
        "mirror.ui.pages.events",
    ),
    (  # entry
        "mirror.cli", "mirror.cli.main", "mirror.cli.serve", "mirror.cli.settings",
        "mirror.cli.state", "mirror.cli.client", "mirror.cli.rules", "mirror.cli.queries",
        "mirror.cli.preflight", "mirror.cli.warm", "mirror.cli.osvimport", "mirror.cli.tables",
        "mirror.cli.exits", "mirror.server", "mirror.__main__",
    ),
)  # fmt: skip
LAYER_OF: Mapping[str, int] = {
    module: level for level, modules in enumerate(LAYERS) for module in modules
}


def test_every_module_has_a_layer() -> None:
    assert sorted(set(MODULES) - set(LAYER_OF)) == []
    assert sorted(set(LAYER_OF) - set(MODULES)) == []


def test_imports_go_down_or_sideways() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module in MODULES
        for target in imports(module, module_level=False)
        if LAYER_OF[target] > LAYER_OF[module]
    )
    assert upward == []
