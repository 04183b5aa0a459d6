"""Where the shared data is required (present, or BEYOND_INET_REQUIRE_SHARED_DATA=1 from `make test` / CI),
a data test that skips fails the run; skips for a missing tool (import, Chromium, GPU) stay skips.

Each case runs the project's conftest in a separate pytest process on a handful of made-up tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

CASES = '''
import pytest

def test_data_folder_moved(shared_data):
    if not (shared_data / "cue-conflict").is_dir():
        pytest.skip("cue-conflict not found under the shared data")

def test_data_needs_a_module(shared_data):
    pytest.importorskip("no_such_module_beyond_inet")

def test_data_needs_chromium(shared_data):
    pytest.skip("headless Chromium / chromedriver not installed")

def test_data_present(shared_data):
    assert shared_data.is_dir()

def test_no_data_no_gpu():
    pytest.skip("no GPU")

@pytest.mark.skipif(True, reason="Ray not installed")
def test_data_skipif_marker(shared_data):
    pass
'''


def outcomes(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """test name -> passed | failed | skipped, from a pytest run in a fresh project folder."""
    proj = tmp_path / "proj"
    shutil.rmtree(proj, ignore_errors=True)
    (proj / "tests").mkdir(parents=True)
    shutil.copy(CONFTEST, proj / "tests" / "conftest.py")
    (proj / "tests" / "test_cases.py").write_text(CASES)
    e = {k: v for k, v in os.environ.items() if k not in ("BEYOND_INET_SHARED_DATA", "BEYOND_INET_REQUIRE_SHARED_DATA")}
    e.update(env)
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                    "--rootdir", str(proj), str(proj / "tests")], cwd=proj, env=e, capture_output=True, text=True,
                   timeout=300)
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        out[case.get("name")] = ("failed" if kinds & {"failure", "error"} else
                                 "skipped" if "skipped" in kinds else "passed")
    return out


TOOL_SKIPS = {"test_data_needs_a_module": "skipped", "test_data_needs_chromium": "skipped",
              "test_no_data_no_gpu": "skipped", "test_data_skipif_marker": "skipped"}


def test_data_test_that_skips_with_the_folder_present_fails(tmp_path):
    data = tmp_path / "shared" / "data"  # present, but without the cue-conflict folder the test looks for
    data.mkdir(parents=True)
    got = outcomes(tmp_path, {"BEYOND_INET_SHARED_DATA": str(data)})
    assert got == {"test_data_folder_moved": "failed", "test_data_present": "passed", **TOOL_SKIPS}


def test_absent_folder_fails_where_data_is_required_and_skips_elsewhere(tmp_path):
    gone = str(tmp_path / "moved-away")
    got = outcomes(tmp_path, {"BEYOND_INET_SHARED_DATA": gone, "BEYOND_INET_REQUIRE_SHARED_DATA": "1"})
    # The fixture finds no folder before any test body runs: every data test fails, whatever it would do next;
    # a skipif marker is decided before the fixture, and a test without data is untouched.
    assert got == {"test_data_folder_moved": "failed", "test_data_present": "failed",
                   "test_data_needs_a_module": "failed", "test_data_needs_chromium": "failed",
                   "test_data_skipif_marker": "skipped", "test_no_data_no_gpu": "skipped"}
    got = outcomes(tmp_path, {"BEYOND_INET_SHARED_DATA": gone})  # a bare clone: data tests skip, nothing fails
    assert got == {"test_data_folder_moved": "skipped", "test_data_present": "skipped", **TOOL_SKIPS}


@pytest.mark.parametrize("required", ["", "1"])
def test_makefile_requires_data_when_the_folder_is_given(required):
    """`make test` passes BEYOND_INET_REQUIRE_SHARED_DATA=1 when DATA_ROOT is set (CI's .ci/run sets it
    always), and the environment can turn it on for a run without DATA_ROOT."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    repo = CONFTEST.parents[1]
    # Under CI this test itself runs inside `make test ... BEYOND_INET_REQUIRE_SHARED_DATA=1`: the outer make's
    # command-line variables reach a child make through MAKEFLAGS and would override ours, so drop them.
    outer_make = {"BEYOND_INET_REQUIRE_SHARED_DATA", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    env = {k: v for k, v in os.environ.items() if k not in outer_make}
    if required:
        env["BEYOND_INET_REQUIRE_SHARED_DATA"] = required
    r = subprocess.run(["make", "-n", "test", "DATA_ROOT=", "BIN=/venv/bin", "VENV=/venv"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert f"BEYOND_INET_REQUIRE_SHARED_DATA={required} " in r.stdout, r.stdout
    r = subprocess.run(["make", "-n", "test", "DATA_ROOT=/somewhere", "BIN=/venv/bin", "VENV=/venv"], cwd=repo,
                       env=env, capture_output=True, text=True)
    assert "BEYOND_INET_REQUIRE_SHARED_DATA=1 " in r.stdout, r.stdout
    assert "BEYOND_INET_REQUIRE_SHARED_DATA=1" in (repo / ".ci" / "run").read_text()
