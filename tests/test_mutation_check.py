"""scripts/mutation_check.py cannot go stale silently: every mutant's original snippet is in today's source,
exactly once, and every test file it names exists. (The mutation check itself is not run here: it runs
tests inside the suite; see the script's docstring.)"""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutation_check", REPO / "scripts" / "mutation_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_every_mutant_snippet_is_found_once_in_the_current_source():
    mc = _script()
    assert len(mc.MUTANTS) >= 7 and len({m.id for m in mc.MUTANTS}) == len(mc.MUTANTS)
    assert mc.check_snippets(REPO) == []
    for m in mc.MUTANTS:
        assert m.mutated != m.original and m.tests, m.id
        text = (REPO / m.file).read_text(encoding="utf-8")
        if m.file.endswith(".py"):  # the mutant is valid Python (a failing import is no kill)
            compile(text.replace(m.original, m.mutated, 1), m.file, "exec")


def test_a_stale_snippet_is_reported(tmp_path):
    mc = _script()
    m = mc.MUTANTS[0]
    (tmp_path / m.file).parent.mkdir(parents=True)
    (tmp_path / m.file).write_text("nothing of the original here\n")
    problems = mc.check_snippets(tmp_path, [m])
    assert any("occurs 0 times" in p for p in problems) and any("test file" in p for p in problems)
