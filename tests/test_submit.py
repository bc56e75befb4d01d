"""`python -m mlbasics.submit`: the course zip, its name, its contents, and that it installs and runs."""

from __future__ import annotations

import os
import site
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest

from mlbasics.submit import MAX_FILE_BYTES, MemberError, build, main, parse_member, zip_name

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
    ("Ada Lovelace,123456,ada|x@example.org", "no \"|\""),
    ("Ada | Lovelace,123456,ada@example.org", "no \"|\""),
    ("Ada Lovelace\n| x | y |,123456,ada@example.org", "line breaks"),
    ("Ada,123456,ada@example.org\n", "line breaks"),
    ("A" * 65 + ",123456,ada@example.org", "at most 64"),
])
def test_malformed_members_are_refused(text, complaint):
    with pytest.raises(MemberError, match=complaint):
        parse_member(text)


def test_cli_refuses_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["--member", "Ada Lovelace,123456", "--out", str(tmp_path)])
    assert str(stop.value).startswith("mlbasics.submit: ") and "three fields" in str(stop.value)
    assert "\n" not in str(stop.value) and not list(tmp_path.glob("*.zip"))


def test_existing_zip_is_never_overwritten(tmp_path):
    members = [parse_member(TEAM[0])]
    first, _, _ = build(members, tmp_path)
    before = first.read_bytes()
    with pytest.raises(FileExistsError):
        build(members, tmp_path)
    assert first.read_bytes() == before


def test_zip_holds_what_the_cluster_needs_and_nothing_else(tmp_path):
    target, _, _ = build([parse_member(t) for t in TEAM], tmp_path)
    names = zipfile.ZipFile(target).namelist()
    for needed in ("pyproject.toml", "README.md", "TEAM.md", "mlbasics/run.py", "conf/config.yaml",
                   "experiments/activations.yaml", "submit/cluster-up.sh", "submit/run.sbatch",
                   "hydra_plugins/mlbasics_launchers/packed_launcher.py"):
        assert needed in names, needed
    for name in names:
        assert not name.startswith(("outputs/", "data/", "tests/")), name
        assert "__pycache__" not in name and not name.endswith((".pt", ".pyc", ".gz")), name
    team = zipfile.ZipFile(target).read("TEAM.md").decode()
    assert "| Grace Hopper | 345678 | grace@example.org |" in team


def test_names_too_long_for_a_file_name_are_refused(tmp_path):
    long = [parse_member(f"{'Abcdefghij' * 6},{'1' * 60}{i},x{i}@example.org") for i in range(3)]
    with pytest.raises(MemberError, match="bytes, over the 255"):
        build(long, tmp_path)
    assert not list(tmp_path.iterdir())


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


@pytest.fixture
def cluttered_project(tmp_path):
    """A git checkout of a project with everything a student's tree collects, some of it tracked."""
    root = tmp_path / "project"
    (root / "mlbasics" / ".ipynb_checkpoints").mkdir(parents=True)
    (root / "submit").mkdir()
    (root / "mlbasics" / "run.py").write_text("print('run')\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "README.md").write_text("# x\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / "mlbasics" / ".env").write_text("SECRET=2\n")
    (root / "mlbasics" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "mlbasics" / "model.pth").write_bytes(b"weights")
    (root / "mlbasics" / ".ipynb_checkpoints" / "run-checkpoint.py").write_text("old\n")
    (root / "submit" / "slurm-123.out").write_text("log\n")
    (root / "mlbasics" / "passwd").symlink_to("/etc/passwd")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "all of it")
    with open(root / "mlbasics" / "weights.npy", "wb") as f:  # untracked, 50 MB (sparse)
        f.truncate(50 * 2 ** 20)
    (root / "mlbasics" / "notes.py").write_text("untracked\n")
    return root


def test_zip_holds_only_tracked_project_files(cluttered_project, tmp_path):
    target, packed, left_out = build([parse_member(TEAM[0])], tmp_path / "zips", root=cluttered_project)
    names = sorted(zipfile.ZipFile(target).namelist())
    assert names == ["README.md", "TEAM.md", "mlbasics/run.py", "pyproject.toml"]
    assert {p.as_posix(): why for p, why in left_out.items()} == {
        "mlbasics/.env": "a dotfile or inside a hidden folder",
        "mlbasics/.ipynb_checkpoints/run-checkpoint.py": "a dotfile or inside a hidden folder",
        "mlbasics/id_rsa": "a key", "mlbasics/model.pth": "weights or data",
        "mlbasics/passwd": "a symbolic link", "submit/slurm-123.out": "a log"}
    contents = b"".join(zipfile.ZipFile(target).read(name) for name in names)
    assert b"root:" not in contents and b"SECRET" not in contents


def test_zip_outside_git_follows_no_links_and_skips_clutter(cluttered_project, tmp_path):
    import shutil
    shutil.rmtree(cluttered_project / ".git")
    target, packed, left_out = build([parse_member(TEAM[0])], tmp_path / "zips", root=cluttered_project)
    names = sorted(zipfile.ZipFile(target).namelist())
    assert names == ["README.md", "TEAM.md", "mlbasics/notes.py", "mlbasics/run.py", "pyproject.toml"]
    assert left_out[next(p for p in left_out if p.name == "weights.npy")] == "weights or data"


def test_file_over_the_size_limit_refuses_the_zip(cluttered_project, tmp_path):
    (cluttered_project / "mlbasics" / "big.py").write_text("#" * (MAX_FILE_BYTES + 1))
    git(cluttered_project, "add", "mlbasics/big.py")
    with pytest.raises(MemberError, match="mlbasics/big.py has 1.0 MiB, over the 1 MiB"):
        build([parse_member(TEAM[0])], tmp_path / "zips", root=cluttered_project)
    assert not (tmp_path / "zips").exists() or not list((tmp_path / "zips").iterdir())


def test_cli_prints_what_went_in(tmp_path, capsys):
    main(["--member", TEAM[0], "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "  mlbasics/run.py\n" in out and "  TEAM.md\n" in out
    assert f"{tmp_path / 'AdaLovelace_123456.zip'}: " in out and "KiB zipped" in out


def test_cli_member_with_separator_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--member", "Ada|Lovelace,123456,ada@example.org", "--out", str(tmp_path)])
    assert str(stop.value).startswith("mlbasics.submit: --member") and "\n" not in str(stop.value)
    assert not list(tmp_path.iterdir())


def environment_of_this_interpreter(target) -> None:
    """A venv whose Python sees this interpreter's packages (torch & co.), whether this one is a venv
    or not, but not its installed mlbasics: plain paths in a .pth file, whose own .pth files stay unread."""
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    inner_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    (Path(inner_site) / "outer-packages.pth").write_text("\n".join(outer) + "\n")
    return python


@pytest.mark.slow
def test_unzipped_submission_installs_and_runs(tmp_path):
    target, _, _ = build([parse_member(t) for t in TEAM], tmp_path / "zips")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    zipfile.ZipFile(target).extractall(unpacked)
    python = environment_of_this_interpreter(tmp_path / "venv")
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
