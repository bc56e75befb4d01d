"""`python -m mlbasics.submit --member "Name,ID,email" ...`: the course submission zip.

The sheet asks for `Name1_id1_Name2_id2_Name3_id3.zip` holding everything needed to run on the
cluster: the package, its Hydra plugins, conf/, experiments/, submit/, pyproject.toml, README.md,
LICENSE, a TEAM.md and the write-up's answers.pdf when it exists (`python -m mlbasics.writeup`).
`--single-file` hands in the PDF alone, as `Name1_id1_Name2_id2.pdf`. In a git checkout only tracked files go in. Never: symbolic links (not followed),
dotfiles and VCS folders, keys, notebooks' checkpoints, logs, weights, data, outputs or caches.
A file over MAX_FILE_BYTES refuses the whole zip; an existing zip is never overwritten.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlbasics.config import PROJECT_DIR

INCLUDED = ["mlbasics", "hydra_plugins", "conf", "experiments", "submit", "pyproject.toml", "README.md", "LICENSE"]
EXCLUDED_PARTS = {"__pycache__", "outputs", "data", "multirun"}
# (patterns, why): matched against each file name
EXCLUDED_NAMES = [
    (("id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx"), "a key"),
    (("*.log", "*.out", "*.err"), "a log"),
    (("*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.npy", "*.npz", "*.h5", "*.pkl", "*.pickle", "*.bin",
      "*-ubyte", "*.gz", "*.zip", "*.tar", "*.csv", "*.parquet"), "weights or data"),
    (("*.pyc", "*.pyo"), "a build artefact"),
]
MAX_FILE_BYTES = 1024 * 1024  # the largest file the project ships is a few tens of KiB
NAME = re.compile(r"[^\W\d_]+(?:[ '\-][^\W\d_]+)*")  # letters, single spaces, hyphens, apostrophes
STUDENT_ID = re.compile(r"[A-Za-z0-9]+")
EMAIL = re.compile(r"[^@\s,|]+@[^@\s,|]+\.[^@\s,|]+")
MAX_MEMBERS = 3
MAX_FIELD = 64
MAX_FILE_NAME = 255  # bytes, on every common filesystem


@dataclass(frozen=True)
class Member:
    name: str
    student_id: str
    email: str

    @property
    def file_part(self) -> str:
        """`Ada Lovelace` -> `AdaLovelace`: spaces would break the Name_id_ pattern of the file name."""
        return re.sub(r"[ '\-]", "", self.name) + "_" + self.student_id


class MemberError(ValueError):
    pass


def parse_member(text: str) -> Member:
    if "|" in text or any(ord(c) < 32 for c in text):
        raise MemberError(f'--member {text!r}: no "|" and no line breaks (they would break TEAM.md)')
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise MemberError(f'--member "{text}": expected "Name,ID,email" (three fields separated by commas)')
    name, student_id, email = parts
    if any(len(part) > MAX_FIELD for part in parts):
        raise MemberError(f'--member "{text[:80]}...": each field may have at most {MAX_FIELD} characters')
    if not NAME.fullmatch(name):
        raise MemberError(f'--member "{text}": name "{name}" must be letters (spaces, hyphens, apostrophes allowed)')
    if not STUDENT_ID.fullmatch(student_id):
        raise MemberError(f'--member "{text}": student ID "{student_id}" must be letters and digits only')
    if not EMAIL.fullmatch(email):
        raise MemberError(f'--member "{text}": "{email}" is not an email address')
    return Member(name, student_id, email)


def zip_name(members: list[Member], suffix: str = ".zip") -> str:
    return "_".join(m.file_part for m in members) + suffix


def candidates(root: Path) -> list[Path]:
    """Tracked files under INCLUDED in a git checkout; elsewhere every file there (links not followed)."""
    if (root / ".git").exists():
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", *INCLUDED],
                                capture_output=True, timeout=60)
        if listed.returncode == 0:
            return sorted(Path(os.fsdecode(name)) for name in listed.stdout.split(b"\0") if name)
    found = []
    for entry in INCLUDED:
        path = root / entry
        if path.is_file() or path.is_symlink():
            found.append(Path(entry))
        for folder, _, files in os.walk(path):  # os.walk does not follow links to folders
            found.extend(Path(folder, name).relative_to(root) for name in files)
    return sorted(found)


def exclusion(root: Path, relative: Path) -> str | None:
    """Why this file stays out of the zip, or None if it goes in."""
    path = root / relative
    if path.is_symlink():
        return "a symbolic link"
    if not path.is_file():
        return "not a regular file"
    if any(part.startswith(".") for part in relative.parts):
        return "a dotfile or inside a hidden folder"
    if EXCLUDED_PARTS & set(relative.parts) or any(p.endswith(".egg-info") for p in relative.parts):
        return "outputs, data or a cache"
    for patterns, why in EXCLUDED_NAMES:
        if any(fnmatch.fnmatch(relative.name, pattern) for pattern in patterns):
            return why
    return None


def files_to_pack(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """(the files that go in, {file left out: why})."""
    packed, left_out = [], {}
    for relative in candidates(root):
        why = exclusion(root, relative)
        if why is None:
            packed.append(relative)
        else:
            left_out[relative] = why
    return packed, left_out


def team_file(members: list[Member]) -> str:
    rows = "\n".join(f"| {m.name} | {m.student_id} | {m.email} |" for m in members)
    return f"# Team\n\n| name | student ID | email |\n|---|---|---|\n{rows}\n"


def check_team(members: list[Member]) -> None:
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise MemberError(f"a team has 1 to {MAX_MEMBERS} members; got {len(members)}")
    ids = [m.student_id for m in members]
    if len(set(ids)) != len(ids):
        raise MemberError(f"student IDs must differ: {', '.join(ids)}")


def target_path(members: list[Member], out_dir: Path, suffix: str) -> Path:
    """Where the submission goes: named by the team, never over an existing file."""
    check_team(members)
    name = zip_name(members, suffix)
    if len(name.encode()) > MAX_FILE_NAME:
        raise MemberError(f"the submission's name would have {len(name.encode())} bytes, over the {MAX_FILE_NAME} "
                          f"a file name may have: shorten the names")
    target = out_dir / name
    if target.exists():
        raise FileExistsError(f"{target} exists; move it away first (it is never overwritten)")
    return target


def single_file(members: list[Member], out_dir: Path, writeup: Path) -> Path:
    """The write-up's PDF alone, named `Name1_id1_Name2_id2.pdf`."""
    target = target_path(members, out_dir, ".pdf")
    if not writeup.is_file():
        raise MemberError(f"{writeup} does not exist: build it with python -m mlbasics.writeup")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".submission.{os.getpid()}.part"
    try:
        shutil.copyfile(writeup, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def build(members: list[Member], out_dir: Path, root: Path = PROJECT_DIR,
          writeup: Path | None = None) -> tuple[Path, list[Path], dict[Path, str]]:
    """Write the zip (with the write-up's PDF as answers.pdf if given and present); returns (its path, the
    files in it, the files left out with why)."""
    target = target_path(members, out_dir, ".zip")
    packed, left_out = files_to_pack(root)
    for relative in packed:
        size = (root / relative).stat().st_size
        if size > MAX_FILE_BYTES:
            raise MemberError(f"{relative} has {size / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB "
                              f"a file of the submission may have; nothing was written")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".submission.{os.getpid()}.part"  # short: the final name may be near the limit
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative in packed:
                archive.write(root / relative, relative.as_posix())
            archive.writestr("TEAM.md", team_file(members))
            if writeup is not None and writeup.is_file():
                archive.write(writeup, "answers.pdf")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, packed, left_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.submit", description=__doc__.splitlines()[0])
    parser.add_argument("--member", action="append", required=True, metavar='"Name,ID,email"',
                        help="a team member; repeat for each (up to 3)")
    parser.add_argument("--out", type=Path, default=Path.cwd(), help="folder for the zip (default: here)")
    parser.add_argument("--writeup", type=Path, default=Path("writeup/answers.pdf"),
                        help="the write-up's PDF, included when it exists (default: writeup/answers.pdf)")
    parser.add_argument("--single-file", action="store_true", help="hand in the write-up's PDF alone")
    args = parser.parse_args(argv)
    try:
        members = [parse_member(text) for text in args.member]
        if args.single_file:
            target = single_file(members, args.out, args.writeup)
            print(f"{target}: the write-up, {target.stat().st_size / 1024:.0f} KiB")
            return
        target, packed, left_out = build(members, args.out, writeup=args.writeup)
    except (MemberError, FileExistsError) as err:
        sys.exit(f"mlbasics.submit: {err}")
    except OSError as err:
        sys.exit(f"mlbasics.submit: could not write in {args.out}: {err.strerror or err}")
    total = sum((PROJECT_DIR / relative).stat().st_size for relative in packed)
    total += args.writeup.stat().st_size if args.writeup.is_file() else 0
    for relative in packed:
        print(f"  {relative.as_posix()}")
    print("  TEAM.md")
    if args.writeup.is_file():
        print(f"  answers.pdf (from {args.writeup})")
    else:
        print(f"no write-up: {args.writeup} does not exist (python -m mlbasics.writeup builds it)")
    if left_out:
        print(f"left out {len(left_out)}: " + ", ".join(f"{p.as_posix()} ({why})" for p, why in left_out.items()))
    print(f"{target}: {len(packed) + 1 + args.writeup.is_file()} files, {total / 1024:.0f} KiB before compression, "
          f"{target.stat().st_size / 1024:.0f} KiB zipped")


if __name__ == "__main__":
    main()
