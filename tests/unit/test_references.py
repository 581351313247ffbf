"""Optional imports in tests tell the truth: absent -> skip; installed but broken -> failure; and in CI a conformance
test may not skip at all (tests/references.py, tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.references import BrokenReferenceError, import_or_skip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for throw-away packages."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("m3s_fine", "m3s_broken", "m3s_broken_dep"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_an_absent_package_is_a_skip_with_the_reason() -> None:
    with pytest.raises(pytest.skip.Exception, match="the 'nothing' extra is not installed"):
        import_or_skip("m3s_no_such_package", "the 'nothing' extra is not installed")


def test_an_installed_package_imports(packages: Path) -> None:
    (packages / "m3s_fine").mkdir()
    (packages / "m3s_fine" / "__init__.py").write_text("VALUE = 3\n")
    assert import_or_skip("m3s_fine", "unused").VALUE == 3


@pytest.mark.parametrize(("name", "body", "error"), [
    # FlagEmbedding under transformers 5: a module its dependency no longer has
    ("m3s_broken", "from json import modeling_attn_mask_utils\n", "ImportError"),
    ("m3s_broken", "import json.modeling_attn_mask_utils\n", "ModuleNotFoundError"),
    ("m3s_broken_dep", "import m3s_no_such_dependency\n", "ModuleNotFoundError"),
])
def test_an_installed_but_broken_package_fails(packages: Path, name: str, body: str, error: str) -> None:
    (packages / name).mkdir()
    (packages / name / "__init__.py").write_text(body)
    with pytest.raises(BrokenReferenceError, match=f"{name} is installed .* fails to import: {error}"):
        import_or_skip(name, "the 'reference' extra is not installed")


def test_a_broken_submodule_of_an_installed_package_fails() -> None:
    with pytest.raises(BrokenReferenceError, match=r"json\.no_such_submodule is installed"):
        import_or_skip("json.no_such_submodule", "unused")


PROBE = '''
import pytest

@pytest.mark.conformance
def test_conformance_skips():
    pytest.skip("the reference is not installed")

@pytest.mark.conformance
@pytest.mark.needs_weights
def test_conformance_needs_weights():
    pytest.skip("real weights are not available offline")

def test_other_skips():
    pytest.skip("an ordinary skip")
'''


def _run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_probe.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_in_ci_a_skipped_conformance_test_fails(tmp_path: Path) -> None:
    result = _run_probe(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 2 skipped" in result.stdout
    assert "FAILED" in result.stdout and "conformance test skipped in CI (the reference is not installed)" in \
        result.stdout
    assert "SKIPPED" in result.stdout and "real weights are not available offline" in result.stdout  # -ra


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    for ci in (None, "false"):
        result = _run_probe(tmp_path, ci)
        assert result.returncode == 0, result.stdout
        assert "3 skipped" in result.stdout and "the reference is not installed" in result.stdout


def test_in_ci_a_module_skipped_at_collection_fails_the_session(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "test_module_skip.py").write_text(
        "from tests.references import import_or_skip\nimport_or_skip('m3s_no_such_package', 'extra absent')\n"
        "def test_hidden():\n    pass\n")
    env = {**os.environ, "CI": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_module_skip.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "test module skipped at collection" in result.stdout and "extra absent" in result.stdout
