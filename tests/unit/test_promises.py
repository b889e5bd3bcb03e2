"""tests/PROMISES.md maps each README promise to the tests that attack it:
every test id it names must exist, so the map cannot rot."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names |= {f"{cls.name}::{m.name}" for m in cls.body if isinstance(m, ast.FunctionDef)}
    return {n for n in names if n.split("::")[-1].startswith("test")}


def test_every_test_named_in_promises_exists():
    text = (ROOT / "tests" / "PROMISES.md").read_text()
    ids = ID.findall(text)
    assert len(ids) > 50  # the map is there and the pattern still finds its ids
    missing = []
    for path, name in ids:
        file = ROOT / path
        if not file.is_file() or name not in _tests_in(file):
            missing.append(f"{path}::{name}")
    assert missing == [], f"PROMISES.md names tests that do not exist: {missing}"
