"""`python -m mlbasics.submit --member "Name,ID,email" ...`: the course submission zip.

The sheet asks for `Name1_id1_Name2_id2_Name3_id3.zip` holding everything needed to run on the
cluster. The zip holds the package, conf/, experiments/, submit/, pyproject.toml, README.md,
LICENSE and a TEAM.md; never outputs, data, caches or checkpoints. An existing zip is never
overwritten.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlbasics.config import PROJECT_DIR

INCLUDED = ["mlbasics", "conf", "experiments", "submit", "pyproject.toml", "README.md", "LICENSE"]
EXCLUDED_PARTS = {"__pycache__", "outputs", "data", ".pytest_cache", "multirun"}
EXCLUDED_SUFFIXES = {".pyc", ".pt", ".ckpt", ".zip", ".gz", ".log"}
NAME = re.compile(r"^[^\W\d_]+(?:[ '\-][^\W\d_]+)*$")  # letters, single spaces, hyphens, apostrophes
STUDENT_ID = re.compile(r"^[A-Za-z0-9]+$")
EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
MAX_MEMBERS = 3


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
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise MemberError(f'--member "{text}": expected "Name,ID,email" (three fields separated by commas)')
    name, student_id, email = parts
    if not NAME.match(name):
        raise MemberError(f'--member "{text}": name "{name}" must be letters (spaces, hyphens, apostrophes allowed)')
    if not STUDENT_ID.match(student_id):
        raise MemberError(f'--member "{text}": student ID "{student_id}" must be letters and digits only')
    if not EMAIL.match(email):
        raise MemberError(f'--member "{text}": "{email}" is not an email address')
    return Member(name, student_id, email)


def zip_name(members: list[Member]) -> str:
    return "_".join(m.file_part for m in members) + ".zip"


def files_to_pack(root: Path) -> list[Path]:
    files = []
    for entry in INCLUDED:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in candidates:
            relative = file.relative_to(root)
            if EXCLUDED_PARTS & set(relative.parts) or file.suffix in EXCLUDED_SUFFIXES \
                    or any(part.endswith(".egg-info") for part in relative.parts):
                continue
            files.append(relative)
    return files


def team_file(members: list[Member]) -> str:
    rows = "\n".join(f"| {m.name} | {m.student_id} | {m.email} |" for m in members)
    return f"# Team\n\n| name | student ID | email |\n|---|---|---|\n{rows}\n"


def build(members: list[Member], out_dir: Path, root: Path = PROJECT_DIR) -> Path:
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise MemberError(f"a team has 1 to {MAX_MEMBERS} members; got {len(members)}")
    ids = [m.student_id for m in members]
    if len(set(ids)) != len(ids):
        raise MemberError(f"student IDs must differ: {', '.join(ids)}")
    target = out_dir / zip_name(members)
    if target.exists():
        raise FileExistsError(f"{target} exists; move it away first (it is never overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in files_to_pack(root):
            archive.write(root / relative, relative.as_posix())
        archive.writestr("TEAM.md", team_file(members))
    tmp.rename(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.submit", description=__doc__.splitlines()[0])
    parser.add_argument("--member", action="append", required=True, metavar='"Name,ID,email"',
                        help="a team member; repeat for each (up to 3)")
    parser.add_argument("--out", type=Path, default=Path.cwd(), help="folder for the zip (default: here)")
    args = parser.parse_args(argv)
    try:
        members = [parse_member(text) for text in args.member]
        target = build(members, args.out)
    except (MemberError, FileExistsError) as err:
        sys.exit(f"mlbasics.submit: {err}")
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    print(f"{target} ({target.stat().st_size / 1024:.0f} KiB, {len(names)} files)")


if __name__ == "__main__":
    main()
