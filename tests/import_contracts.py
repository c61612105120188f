"""A contract type for import-linter (``.importlinter``): these modules don't import these names.

import-linter's own ``forbidden`` contract can only forbid a whole external package (``flask``),
never one name of it (``flask.request``), and the rule modules still read ``current_app``. This
contract reads each source module's own code (every ``import``, including those inside functions)
and fails on ``from flask import request`` (or ``g``, ...) and on a bare ``import flask``, through
which any name could be reached.
"""

import ast
import importlib.util

from importlinter import Contract, ContractCheck, fields, output


def in_package(module, package):
    """Whether ``module`` (``None`` for ``from . import x``) is ``package`` or one of its modules."""
    return module is not None and (module == package or module.startswith(package + "."))


class ForbiddenNamesContract(Contract):
    """No module in ``source_modules`` (or below them) imports any of ``names`` from ``package``."""

    type_name = "forbidden_names"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    package = fields.StringField()
    names = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose):
        violations = []
        for source in self.source_modules:
            for module in sorted({source.name} | graph.find_descendants(source.name)):
                violations.extend(self.violations_in(module))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def violations_in(self, module):
        """``(module, line, text)`` for each forbidden import in ``module``'s source."""
        package, names = str(self.package), {str(name) for name in self.names}
        path = importlib.util.find_spec(module).origin
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read(), path)
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bare = [alias.name for alias in node.names if alias.name == package]
                found += [(module, node.lineno, f"import {name}") for name in bare]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and in_package(node.module, package):
                hits = [alias.name for alias in node.names if alias.name in names]
                found += [(module, node.lineno, f"from {node.module} import {name}") for name in hits]
        return found

    def render_broken_contract(self, check):
        for module, line, text in check.metadata["violations"]:
            output.print_error(f"{module}:{line}: {text}", bold=False)
