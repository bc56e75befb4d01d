"""`python -m mlbasics.submit`: the course zip, its name, its contents, and that it installs and runs."""

from __future__ import annotations

import subprocess
import venv
import zipfile

import pytest

from conftest import run_cli
from mlbasics.submit import MemberError, build, parse_member, zip_name

TEAM = ("Ada Lovelace,123456,ada@example.org", "Alan Turing,234567,alan@example.org",
        "Grace Hopper,345678,grace@example.org")


def test_zip_name_follows_the_sheet():
    members = [parse_member(text) for text in TEAM]
    assert zip_name(members) == "AdaLovelace_123456_AlanTuring_234567_GraceHopper_345678.zip"


@pytest.mark.parametrize("text, complaint", [
    ("Ada Lovelace,123456", "three fields"),
    ("Ada Lovelace,12 34,ada@example.org", "student ID"),
    ("Ada L0velace,123456,ada@example.org", "name"),
    ("Ada Lovelace,123456,ada.example.org", "not an email"),
    (",123456,ada@example.org", "name"),
])
def test_malformed_members_are_refused(text, complaint):
    with pytest.raises(MemberError, match=complaint):
        parse_member(text)


def test_cli_refuses_with_one_line(tmp_path):
    proc = run_cli("--member", "Ada Lovelace,123456", "--out", str(tmp_path), module="mlbasics.submit", cwd=tmp_path)
    assert proc.returncode != 0 and "three fields" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.zip"))


def test_existing_zip_is_never_overwritten(tmp_path):
    members = [parse_member(TEAM[0])]
    first = build(members, tmp_path)
    before = first.read_bytes()
    with pytest.raises(FileExistsError):
        build(members, tmp_path)
    assert first.read_bytes() == before


def test_zip_holds_what_the_cluster_needs_and_nothing_else(tmp_path):
    target = build([parse_member(t) for t in TEAM], tmp_path)
    names = zipfile.ZipFile(target).namelist()
    for needed in ("pyproject.toml", "README.md", "TEAM.md", "mlbasics/run.py", "conf/config.yaml",
                   "experiments/activations.yaml", "submit/cluster-up.sh", "submit/run.sbatch"):
        assert needed in names, needed
    for name in names:
        assert not name.startswith(("outputs/", "data/", "tests/")), name
        assert "__pycache__" not in name and not name.endswith((".pt", ".pyc", ".gz")), name
    team = zipfile.ZipFile(target).read("TEAM.md").decode()
    assert "| Grace Hopper | 345678 | grace@example.org |" in team


@pytest.mark.slow
def test_unzipped_submission_installs_and_runs(tmp_path):
    target = build([parse_member(t) for t in TEAM], tmp_path / "zips")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    zipfile.ZipFile(target).extractall(unpacked)
    # a venv that sees the installed torch & co. but installs this copy of mlbasics for itself
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)  # pip, setuptools: the system's
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "-e", str(unpacked)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    where = subprocess.run([str(python), "-c", "import mlbasics; print(mlbasics.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert where.stdout.strip() == str(unpacked / "mlbasics" / "__init__.py")
    run = subprocess.run([str(python), "-m", "mlbasics.run", "dataset=synthetic", "trainer.epochs=1"],
                         cwd=unpacked, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert list((unpacked / "outputs" / "runs").glob("*/*/results.json"))
