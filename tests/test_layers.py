"""The house has one direction: no import runs back up from a lower layer to a higher one.

    service/                      top floor: CLI, runner, wiring, pipeline, queries
    bot/                          Telegram surface (asks service through bot.api.BotApi)
    feeds/  storage/  monitors/   side by side: none imports another
    core/                         ground: config, errors, models, clock, calendar, retry

A module may import its own package and any package on a lower floor; ``monitors`` does no
I/O, so it may not import storage or feeds either (same floor). Imports are read with
``ast`` from every module, including those inside functions, and no module may use
importlib to hide one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOOR = {"core": 0, "feeds": 1, "storage": 1, "monitors": 1, "bot": 2, "service": 3}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


MODULES = sorted(p for pkg in FLOOR for p in (REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_runs_back_up(path: Path) -> None:
    here = path.relative_to(REPO).parts[0]
    wrong = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top == "importlib" and module != "importlib.metadata":  # metadata reads the version
            wrong.append(f"line {line}: importlib (use a plain import)")
        if top in FLOOR and top != here and FLOOR[top] >= FLOOR[here]:
            wrong.append(f"line {line}: {here}/ imports {module} (floor {FLOOR[top]} >= {FLOOR[here]})")
    assert not wrong, f"{path.relative_to(REPO)}: " + "; ".join(wrong)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from service.queries import rank\n", encoding="utf-8")
    assert _imports(bad) == [(2, "service.queries")]


def test_every_package_is_on_a_floor() -> None:
    pkgs = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert pkgs == set(FLOOR), pkgs
