"""Two contracts import-linter does not ship, for the layering `make lint` checks (pyproject.toml):

- acyclic_modules: no import circle between any two modules of the given packages, however long (the
  shipped acyclic_siblings looks at packages, not at modules across apps);
- no_private_names: no module imports a private name (`_helper`) from another module: a helper another
  module needs is public, and lives where both can reach it.
"""

from __future__ import annotations

import ast
import importlib.util

from importlinter import Contract, ContractCheck, fields, output


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other, in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges.get(child, ())))))
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
    return groups


class AcyclicModulesContract(Contract):
    type_name = "acyclic_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def _modules(self, graph) -> set[str]:
        return {m for m in graph.modules if m.split(".")[0] in self.packages}

    def check(self, graph, verbose: bool) -> ContractCheck:
        modules = self._modules(graph)
        edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
        circles = _strongly_connected(edges)
        return ContractCheck(kept=not circles, metadata={"circles": circles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for circle in check.metadata["circles"]:
            output.print_error(f"These modules import each other in a circle: {', '.join(circle)}")
            output.new_line()


class NoPrivateNamesContract(Contract):
    type_name = "no_private_names"

    packages = fields.ListField(subfield=fields.StringField())
    ignore_packages = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph, verbose: bool) -> ContractCheck:
        found = []
        ignored = tuple(self.ignore_packages or ())
        for module in sorted(m for m in graph.modules if m.split(".")[0] in self.packages):
            if any(module == i or module.startswith(i + ".") for i in ignored):
                continue
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                continue
            package = module if spec.submodule_search_locations else module.rpartition(".")[0]
            with open(spec.origin, encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                target = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and target.split(".")[0] in self.packages:
                        found.append(f"{module} imports {alias.name} from {target} (line {node.lineno})")
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["found"]:
            output.print_error(line)
            output.new_line()
