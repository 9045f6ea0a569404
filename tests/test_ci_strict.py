"""Issue 22: under CI a test skipped for a module that cannot be imported (a broken napari install) fails the run;
locally it stays a skip. Other skips are untouched."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULE_SKIP = 'import pytest\nmod = pytest.importorskip("no_such_module_for_ci_test")\ndef test_x(): pass\n'
TEST_SKIP = '''import pytest
def test_in(): pytest.importorskip("no_such_module_for_ci_test")
def test_other_skip(): pytest.skip("not an import problem")
def test_ok(): pass
'''


def _run(tmp_path, ci):
    (tmp_path / "conftest.py").write_text("from tests._ci_strict import pytest_make_collect_report, "
                                          "pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    (tmp_path / "test_test_skip.py").write_text(TEST_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "--continue-on-collection-errors", str(tmp_path)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout.strip().splitlines()[-1]


def test_a_skip_for_a_missing_module_fails_under_ci_and_skips_locally(tmp_path):
    rc, summary = _run(tmp_path, "true")
    assert rc == 1 and all(s in summary for s in ("1 failed", "1 passed", "1 skipped", "1 error")), summary
    rc, summary = _run(tmp_path, None)
    assert rc == 0 and all(s in summary for s in ("1 passed", "3 skipped")) and "failed" not in summary, summary
