"""Every output file (report.html/.md, reproduction.csv, figures, results.csv/.json) is written to a temporary
name in its folder and renamed: a disk that fills up mid-write leaves the previous complete file, no temp
file, and one line naming the file that could not be written and its folder's free space.

The full disk is simulated: every `open` for writing of the file under test (or of its temporary name)
returns a file whose writes stop after a quota and then raise OSError(ENOSPC), as a real full disk does
(the write that fails carries no file name)."""
from __future__ import annotations

import builtins
import errno
import io
import shutil
from pathlib import Path

import pytest

from beyond_inet import cli
from beyond_inet.errors import UserError
from beyond_inet.report.html import write_report
from beyond_inet.report.results import ResultsDB

from test_report import build_run  # noqa: E402  (tests/report is on sys.path)

OUTPUTS = ("report.html", "report.md", "reproduction.csv", "results.csv", "results.json",
           "figures/invariance.png", "figures/invariance.svg")


class _FullDisk:
    """A writable file that takes `quota` bytes, then raises ENOSPC (what is written before stays)."""

    def __init__(self, f, quota: int, text: bool):
        self._f, self._left, self._text = f, quota, text

    def write(self, data):
        n = len(data.encode("utf-8") if self._text else data)
        if n <= self._left:
            self._left -= n
            return self._f.write(data)
        part = data[: self._left]
        self._f.write(part)
        self._f.flush()
        self._left = 0
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __getattr__(self, name):
        return getattr(self._f, name)


def fill_disk_for(monkeypatch, target: Path, quota: int) -> None:
    """Writes to `target` (or to a temporary name next to it) stop after `quota` bytes with ENOSPC."""
    real_open = builtins.open

    def is_target(file) -> bool:
        if not isinstance(file, (str, Path)):
            return False
        p = Path(file)
        return p.parent.resolve() == target.parent.resolve() and (
            p.name == target.name or (p.name.startswith(f".{target.name}.") and p.name.endswith(".tmp")))

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if is_target(file) and any(c in mode for c in "wax"):
            return _FullDisk(f, quota, "b" not in mode)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "results.sqlite" and "store" not in p.relative_to(out).parts}


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    """A run folder with every output written once, complete."""
    out = build_run(tmp_path_factory.mktemp("reported"), {"only-model": (150, 0.8)})
    db = ResultsDB(out)
    db.export()
    db.close()
    write_report(out)
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 50, name
    return out


@pytest.mark.parametrize("name", OUTPUTS)
def test_full_disk_keeps_the_previous_file_and_names_it(name, reported, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(reported, out)
    before = snapshot(out)
    target = out / name
    fill_disk_for(monkeypatch, target, quota=min(4096, target.stat().st_size // 2))
    if name.startswith("results."):  # written by the run's export step
        db = ResultsDB(out)
        with pytest.raises(UserError) as e:
            db.export()
        db.close()
        line = str(e.value)
    else:
        assert cli.main(["report", str(out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        line = err
    monkeypatch.undo()
    assert f"no space left on the device writing {target} (" in line, line
    assert " free)" in line  # the free space of the folder that holds the file, not of the working directory
    after = snapshot(out)
    assert after[name] == before[name], "the previous complete file was replaced by a cut one"
    assert not [p for p in out.rglob(".*.tmp")], "a temporary file was left behind"
    assert set(after) == set(before)  # the others: kept, or replaced whole (report.md carries a timestamp)
    for other in ("report.html", "report.md"):
        assert after[other].rstrip().endswith(before[other].rstrip()[-40:]), other


def test_written_outputs_are_byte_identical_to_a_fresh_write(reported, tmp_path):
    """Writing through the temp-and-rename helper changes no byte: a second write gives the same files."""
    out = tmp_path / "out"
    shutil.copytree(reported, out)
    db = ResultsDB(out)
    db.export()
    db.close()
    write_report(out)
    again, first = snapshot(out), snapshot(reported)
    for name in ("results.csv", "results.json", "reproduction.csv", "figures/invariance.png"):
        assert again[name] == first[name], name
    assert (out / "results.csv").read_bytes().startswith(b"model,dataset,analysis,metric")
