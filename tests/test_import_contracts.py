"""The contract type of ``.importlinter`` that keeps flask's request globals out of the rules."""

import sys
import textwrap

import grimp
import pytest

from tests.import_contracts import ForbiddenNamesContract

OPTIONS = {"source_modules": ["shop.rules"], "package": "flask", "names": ["request", "g"]}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """Write modules of a throwaway package ``shop``: ``package({"rules/a.py": "..."})``."""

    def write(files):
        for name, code in {"__init__.py": "", "rules/__init__.py": "", **files}.items():
            path = tmp_path / "shop" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(code))
        monkeypatch.syspath_prepend(str(tmp_path))
        return grimp.build_graph("shop", cache_dir=None)

    yield write
    for name in [name for name in sys.modules if name == "shop" or name.startswith("shop.")]:
        del sys.modules[name]


def check(graph):
    return ForbiddenNamesContract("rules", {}, OPTIONS).check(graph, verbose=False)


def test_current_app_and_other_packages_are_allowed(package):
    graph = package({"rules/a.py": "from flask import current_app\nfrom shop import request\n"})
    assert check(graph).kept


def test_request_globals_are_found_even_inside_a_function(package):
    graph = package(
        {
            "rules/a.py": """\
                from flask import current_app, g

                def rule():
                    from flask.globals import request
                """,
            "rules/b.py": "import flask\n",
            "web.py": "from flask import request\n",
        }
    )
    result = check(graph)
    assert not result.kept
    assert sorted(result.metadata["violations"]) == [
        ("shop.rules.a", 1, "from flask import g"),
        ("shop.rules.a", 4, "from flask.globals import request"),
        ("shop.rules.b", 1, "import flask"),
    ]
