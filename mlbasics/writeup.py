"""`python -m mlbasics.writeup`: sheet 6's answers from your own sweeps, as Markdown, HTML and PDF.

Reads the most recent sweep with tables of each experiment under outputs/multirun/ (or the folders
given with --from), computes the analytic answers with the functions `python -m mlbasics.sheet`
runs, and writes writeup/answers.md, a self-contained writeup/answers.html and writeup/answers.pdf,
with the team (--member, as for `python -m mlbasics.submit`) at the top. A question whose sweep is
missing or has failed, diverged or unfinished jobs says so in place, with the command that runs it;
--run-missing runs those sweeps first (with any overrides given after it, e.g. hydra/launcher=joblib).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlbasics import answers, document, records, sheet
from mlbasics.submit import MAX_MEMBERS, Member, MemberError, parse_member
from mlbasics.sweeps import by_experiment

TITLE = "Exercise sheet 6: answers"
# experiments/README.md's measured tables sit between these markers; --tables FILE remakes them
TABLE_BLOCK = re.compile(r"(<!-- table: ([a-z_]+(?: noisy)?) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)
DEFAULT_SOURCE = Path("outputs/multirun")


def team_block(members: list[Member]) -> str:
    if not members:
        return "**Team:** not given (add `--member \"Name,ID,email\"` for each member).\n"
    rows = "\n".join(f"| {m.name} | {m.student_id} | {m.email} |" for m in members)
    return f"| name | student ID | email |\n|---|---|---|\n{rows}\n"


def copy_figures(found: list[answers.Answer], folder: Path) -> dict[Path, str]:
    """Each readable figure copied to `folder`/figures/ (so answers.md travels with them): {source: relative
    path}. Figures of an earlier build there are removed first; a figure that is not a readable image is
    left out with one line (the PDF writer would stop on it)."""
    from PIL import Image, UnidentifiedImageError

    relative = {}
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    for earlier in (folder / "figures").glob("q[0-9][0-9]_*.png"):
        earlier.unlink()
    for number, answer in enumerate(found, start=1):
        for figure in list(answer.figures):
            try:
                with Image.open(figure) as image:
                    image.verify()
            except (OSError, UnidentifiedImageError, SyntaxError) as err:  # PIL reports a damaged PNG as any
                print(f"mlbasics.writeup: {figure}: not a readable image ({type(err).__name__}); left out",
                      file=sys.stderr)
                answer.figures.remove(figure)
                continue
            name = f"figures/q{number:02d}_{figure.parent.name[-12:]}_{figure.name}"
            shutil.copyfile(figure, folder / name)
            relative[figure] = name
    return relative


def compose(found: list[answers.Answer], members: list[Member], figures: dict[Path, str]) -> str:
    parts = [f"# {TITLE}\n", team_block(members)]
    gaps = [f"- {a.heading.split(':')[0]}: {gap}" for a in found for gap in a.gaps]
    if gaps:
        parts.append("**Not complete.** These answers lack measurements (each says so in place):\n\n"
                     + "\n".join(gaps) + "\n")
    for answer in found:
        parts.append(f"## {answer.heading}\n\n{answer.markdown}")
        parts += [f"![{figures[f]}]({figures[f]})\n" for f in answer.figures]
    return "\n".join(parts)


def run_missing(sweeps: dict[str, list[Path]], overrides: list[str]) -> None:
    """Run each experiment that has no sweep yet (noisy BatchNorm and the tuned activations included)."""
    wanted = [(name, []) for name in answers.EXPERIMENTAL] + [("activations_tuned", []),
                                                              ("bn_landscape", answers.NOISY.split())]
    for name, extra in wanted:
        if name == "activations_tuned":
            have = bool(sweeps.get(name))
        else:
            have = answers.pick(name, sweeps, noisy=bool(extra))[0] is not None
        if have:
            continue
        line = [sys.executable, "-m", "mlbasics.run", "-m", f"+experiment={name}", *extra, *overrides]
        print(f"running: {' '.join(line[1:])}", flush=True)
        done = subprocess.run(line)
        if done.returncode != 0:
            print(f"mlbasics.writeup: {name} ended with exit status {done.returncode}; its answer says what is "
                  f"missing", file=sys.stderr)


def update_tables(path: Path, sweeps: dict[str, list[Path]]) -> None:
    """Each marked table of `path` remade from the most recent sweep of its experiment (kept where none)."""
    known = [*answers.EXPERIMENTAL, "activations_tuned", "bn_landscape noisy"]

    def remake(match: re.Match) -> str:
        if match.group(2) not in known:
            print(f"{match.group(2)}: not a table this command makes ({', '.join(known)}); kept as it was")
            return match.group(0)
        made = answers.measured_table(match.group(2), sweeps)
        print(f"{match.group(2)}: " + (made.splitlines()[0] if made else "no sweep found; table kept as it was"))
        return match.group(1) + (made if made else match.group(3)) + match.group(4)

    text = path.read_text(encoding="utf-8")
    records.write_text(path, TABLE_BLOCK.sub(remake, text))


def parse_x(text: str) -> list[float]:
    try:
        return [float(v) for v in text.strip("[]").split(",")]
    except ValueError:
        raise ValueError(f"--x {text}: give numbers separated by commas, e.g. --x 1,2,-1,0.5") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.writeup", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="sources", nargs="+", type=Path, metavar="DIR",
                        help=f"sweep folders, or folders holding them (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=Path("writeup"), help="output folder (default: writeup)")
    parser.add_argument("--member", action="append", default=[], metavar='"Name,ID,email"',
                        help=f"a team member; repeat for each (1 to {MAX_MEMBERS})")
    parser.add_argument("--x", default="1,2,-1,0.5", help="6.5's input (the sheet's figure holds it)")
    parser.add_argument("--run-missing", nargs="*", metavar="OVERRIDE",
                        help="first run the experiments that have no sweep, with these overrides")
    parser.add_argument("--tables", type=Path, metavar="FILE",
                        help="instead, remake the measured tables marked in FILE (experiments/README.md)")
    args = parser.parse_args(argv)
    try:
        members = [parse_member(text) for text in args.member]
        if len(members) > MAX_MEMBERS or len({m.student_id for m in members}) != len(members):
            raise MemberError(f"a team has 1 to {MAX_MEMBERS} members with different student IDs")
        x = parse_x(args.x)
        defaults = sheet.SheetConfig()
        sheet.forward_pass(x, defaults.W1, defaults.W2)  # ValueError naming the shapes
    except (MemberError, ValueError) as err:
        sys.exit(f"mlbasics.writeup: {err}")
    sources = args.sources or [DEFAULT_SOURCE]
    for source in args.sources or []:
        if not source.is_dir():
            sys.exit(f"mlbasics.writeup: --from {source} is not a folder")
    if args.tables is not None and not args.tables.is_file():
        sys.exit(f"mlbasics.writeup: --tables {args.tables}: No such file")
    start = time.perf_counter()
    sweeps, skipped = by_experiment([s for s in sources if s.is_dir()])
    if args.run_missing is not None:
        run_missing(sweeps, args.run_missing)
        sources = list(dict.fromkeys([*sources, DEFAULT_SOURCE]))  # where those sweeps went
        sweeps, skipped = by_experiment([s for s in sources if s.is_dir()])
    for line in skipped:
        print(f"mlbasics.writeup: {line}", file=sys.stderr)
    if args.tables is not None:
        try:
            update_tables(args.tables, sweeps)
        except (OSError, UnicodeDecodeError) as err:
            sys.exit(f"mlbasics.writeup: --tables {args.tables}: {getattr(err, 'strerror', None) or err}")
        return
    if not sweeps:
        print(f"mlbasics.writeup: no sweep folders under {', '.join(map(str, sources))}: the training questions "
              f"say how to run them", file=sys.stderr)
    found = answers.all_answers(sweeps, x)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        figures = copy_figures(found, args.out)
        text = compose(found, members, figures)
        records.write_text(args.out / "answers.md", text)
        absolute = text.replace("](figures/", f"]({(args.out / 'figures').resolve()}/")
        records.write_text(args.out / "answers.html", document.html_page(absolute, TITLE))
        pages = document.write_pdf(absolute, args.out / "answers.pdf", TITLE)
    except OSError as err:
        sys.exit(f"mlbasics.writeup: could not write in {args.out}: {err.strerror or err}")
    for answer in found:
        print(f"{answer.heading.split(':')[0]:<16} " + ("; ".join(answer.gaps) if answer.gaps else "measured"))
    print(f"wrote {args.out / 'answers.md'}, answers.html and answers.pdf ({pages} pages) in "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
