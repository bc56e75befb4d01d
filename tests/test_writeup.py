"""`python -m mlbasics.writeup`: the answers from shortened sweeps (synthetic data), their numbers equal to the
sweeps' tables, the HTML self-contained, the PDF readable, gaps named with their commands, bad input in one line."""

from __future__ import annotations

import shutil
import zipfile

import pandas as pd
import pytest
from pypdf import PdfReader

from conftest import run_cli

HEADINGS = ["6.1 a-d", "6.2 a-b", "6.2 c and 6.3 f", "6.3 a", "6.3 b", "6.3 c", "6.3 d", "6.3 e", "6.3 g", "6.3 h",
            "6.4", "6.5", "6.6 b-c"]
TEAM = ("--member", "Ada Lovelace,ab12,ada@example.org", "--member", "Alan Turing,cd34,alan@example.org")
# the metrics each question's table shows (answers.EXPERIMENTAL), accuracies to 4 decimals
SHOWN = {"no_activation": ["collapse_max_abs_diff", "collapse_output_scale", "test_acc"],
         "activations": ["test_acc", "first_epoch_val_acc_0.80", "grad_ratio_first_last_epoch1"],
         "lr_convex": ["lr_effective", "train_loss_increases", "train_loss", "test_acc"],
         "batchnorm_bs1": ["test_acc", "val_acc"],
         "bn_landscape": ["test_acc", "landscape_loss_range_first", "landscape_loss_range_last",
                          "landscape_gradpred_last", "landscape_beta_eff_last"],
         "fashion_mnist": ["test_acc", "val_acc", "train_acc"]}


def writeup(*args, cwd):
    return run_cli(*args, cwd=cwd, module="mlbasics.writeup", timeout=300)


@pytest.fixture(scope="module")
def built(shortened_sweeps, tmp_path_factory):
    out = tmp_path_factory.mktemp("writeup") / "writeup"
    proc = writeup("--from", str(shortened_sweeps.root), "--out", str(out), *TEAM, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, shortened_sweeps.root


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end > 0 else None]


def test_every_question_and_the_team_are_there(built):
    out, proc, _ = built
    text = (out / "answers.md").read_text()
    positions = [text.index(f"## {heading}") for heading in HEADINGS]
    assert positions == sorted(positions)  # in the sheet's order
    assert "| Ada Lovelace | ab12 | ada@example.org |" in text and "| Alan Turing | cd34 | alan@example.org |" in text
    assert "6.5" in proc.stdout and "answers.pdf (" in proc.stdout


@pytest.mark.parametrize("experiment, heading", [("no_activation", "6.3 a"), ("activations", "6.3 b"),
                                                 ("lr_convex", "6.3 e"), ("batchnorm_bs1", "6.3 h"),
                                                 ("bn_landscape", "6.4"), ("fashion_mnist", "6.6 b-c")])
def test_each_table_holds_the_numbers_of_its_sweep(built, experiment, heading):
    out, _, root = built
    text = section((out / "answers.md").read_text(), heading)
    (grouped_path,) = (root / experiment).glob("*/summary_grouped.csv")
    assert str(grouped_path.parent) in text  # it names the sweep it read, and the command that made it
    assert f"Command: `python -m mlbasics.run -m +experiment={experiment} dataset=synthetic trainer.threads=1 " in text
    grouped = pd.read_csv(grouped_path)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for _, row in grouped.iterrows():
        for metric in SHOWN[experiment]:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            if pd.isna(mean):
                continue
            digits = "{:.4f}" if metric.endswith("_acc") else "{:.4g}"
            cell = digits.format(mean) + ("" if pd.isna(std) else " ± " + digits.format(std))
            assert any(cell in line for line in rows), (metric, cell)


def test_the_symmetry_table_has_a_row_per_seed_from_its_summary(built):
    out, _, root = built
    text = section((out / "answers.md").read_text(), "6.2 c and 6.3 f")
    (summary,) = (root / "symmetry").glob("*/summary.csv")
    for _, job in pd.read_csv(summary).iterrows():
        assert f"{job['symmetry_jensen_gap']:.4g}" in text and f"{job['test_acc']:.4g}" in text


def test_the_tuned_comparison_reads_each_arms_best_and_confirmation(built):
    out, _, root = built
    text = section((out / "answers.md").read_text(), "6.3 b")
    (confirm,) = (root / "activations_tuned").glob("*/confirm/summary_grouped.csv")
    for _, row in pd.read_csv(confirm).iterrows():
        assert f"| {row['model.activation']} | 1 |" in text
        assert f"{row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f}" in text
    assert "Ranking by test accuracy: depth 1: tuned" in text


def test_a_missing_sweep_is_named_with_its_command(built):
    out, proc, _ = built
    text = (out / "answers.md").read_text()
    command = "python -m mlbasics.run -m +experiment=bn_landscape model.batchnorm=true model.batchnorm_noise=true"
    assert command in section(text, "6.4") and command in text.split("\n## ")[0]  # in place and in the list at the top
    assert "Not complete." in text


def test_the_html_stands_alone_and_the_pdf_reads(built):
    out, _, _ = built
    page = (out / "answers.html").read_text()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert len(figures) >= 5 and page.count('src="data:image/png;base64,') == len(figures)
    assert "<img" not in page.replace('<img alt="', "")  # every image is one of those
    pdf = PdfReader(out / "answers.pdf")
    assert len(pdf.pages) > 0
    words = "".join(page.extract_text() for page in pdf.pages)
    assert "6.6 b-c" in words and "Ada Lovelace" in words
    assert "L(θ_perm) − L(θ)" in words and " ± " in words  # the text is Unicode, not Latin-1 with gaps


def test_the_submission_holds_the_pdf_or_is_the_pdf(built, tmp_path):
    out, _, _ = built
    zipped = run_cli(*TEAM, "--writeup", str(out / "answers.pdf"), "--out", str(tmp_path), cwd=tmp_path,
                     module="mlbasics.submit")
    assert zipped.returncode == 0, zipped.stderr
    with zipfile.ZipFile(tmp_path / "AdaLovelace_ab12_AlanTuring_cd34.zip") as archive:
        assert archive.read("answers.pdf") == (out / "answers.pdf").read_bytes()
        assert "hydra_plugins/mlbasics_launchers/optuna_sweeper.py" in archive.namelist()
    single = run_cli(*TEAM, "--writeup", str(out / "answers.pdf"), "--out", str(tmp_path), "--single-file",
                     cwd=tmp_path, module="mlbasics.submit")
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "AdaLovelace_ab12_AlanTuring_cd34.pdf").read_bytes() == (out / "answers.pdf").read_bytes()
    again = run_cli(*TEAM, "--writeup", str(out / "answers.pdf"), "--out", str(tmp_path), "--single-file",
                    cwd=tmp_path, module="mlbasics.submit")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "never overwritten" in again.stderr


def test_single_file_without_a_writeup_is_one_line(tmp_path):
    proc = run_cli(*TEAM, "--writeup", str(tmp_path / "nope.pdf"), "--single-file", "--out", str(tmp_path),
                   cwd=tmp_path, module="mlbasics.submit")
    assert proc.returncode == 1
    assert proc.stderr == (f"mlbasics.submit: {tmp_path / 'nope.pdf'} does not exist: build it with "
                           f"python -m mlbasics.writeup\n")


def test_no_sweeps_still_answers_the_analytic_questions(tmp_path):
    proc = writeup("--from", str(tmp_path), "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"mlbasics.writeup: no sweep folders under {tmp_path}: the training "
                                                f"questions say how to run them"]
    text = (tmp_path / "w" / "answers.md").read_text()
    assert "python -m mlbasics.run -m +experiment=fashion_mnist" in section(text, "6.6 b-c")
    assert "o = softmax(z2) = [0.248804, 0.751196]" in section(text, "6.5")  # the sheet's x by default


def test_a_sweep_filed_under_another_experiment_answers_its_own_question(shortened_sweeps, tmp_path):
    (fashion,) = (shortened_sweeps.root / "fashion_mnist").glob("*/multirun.yaml")
    shutil.copytree(fashion.parent, tmp_path / "multirun" / "activations" / fashion.parent.name)
    proc = writeup("--from", str(tmp_path / "multirun"), "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "w" / "answers.md").read_text()
    assert "Measured in" in section(text, "6.6 b-c") and "Not measured yet" in section(text, "6.3 b")


def test_damaged_files_are_one_line_each_and_the_rest_is_built(shortened_sweeps, tmp_path):
    root = tmp_path / "multirun"
    shutil.copytree(shortened_sweeps.root, root)
    (grouped,) = (root / "fashion_mnist").glob("*/summary_grouped.csv")
    grouped.write_bytes(b"\x00\xff not a table")
    (multirun,) = (root / "activations").glob("*/multirun.yaml")
    multirun.write_text("hydra: [unclosed")
    (figure,) = (root / "symmetry").glob("*/symmetry.png")
    figure.write_bytes(figure.read_bytes()[:200])  # a PNG cut short
    out = tmp_path / "w"
    proc = writeup("--from", str(root), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"mlbasics.writeup: {multirun}: unreadable (ParserError)",
                                        f"mlbasics.writeup: {figure}: not a readable image (OSError); left out"]
    text = (out / "answers.md").read_text()
    assert "unreadable tables" in section(text, "6.6 b-c") and "Not measured yet" in section(text, "6.3 b")
    assert "Measured in" in section(text, "6.3 e") and "symmetry.png" not in text
    # built again into the same folder: the figures there are this build's, each embedded once
    figure.unlink()
    assert writeup("--from", str(root), "--out", str(out), cwd=tmp_path).returncode == 0
    assert (out / "answers.html").read_text().count("data:image/png") == len(list((out / "figures").iterdir()))


@pytest.mark.parametrize("args, line", [
    (("--member", "Ada,12"), 'mlbasics.writeup: --member "Ada,12": expected "Name,ID,email" (three fields '
                             'separated by commas)'),
    (("--x", "1,2"), "mlbasics.writeup: x has 2 numbers, W1 is [4, 3] and W2 is [3, 2]: need len(x) = rows of W1 "
                     "and columns of W1 = rows of W2"),
    (("--from", "missing"), "mlbasics.writeup: --from missing is not a folder"),
    (("--tables", "missing.md"), "mlbasics.writeup: --tables missing.md: No such file"),
])
def test_bad_input_is_one_line(tmp_path, args, line):
    proc = writeup(*args, "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr == line + "\n"
    assert not (tmp_path / "w").exists()


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    proc = writeup("--from", str(tmp_path), "--out", str(blocked / "w"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == f"mlbasics.writeup: could not write in {blocked / 'w'}: Not a directory"


def test_the_marked_tables_of_a_readme_are_remade_from_the_sweeps(shortened_sweeps, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Measured\n\nprose stays\n<!-- table: fashion_mnist -->\n| stale |\n<!-- /table -->\n"
                      "between\n<!-- table: bn_landscape noisy -->\nkept\n<!-- /table -->\n"
                      "<!-- table: nonsense -->\nkept too\n<!-- /table -->\nend\n")
    proc = writeup("--from", str(shortened_sweeps.root), "--tables", str(readme), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert text.startswith("# Measured\n\nprose stays\n<!-- table: fashion_mnist -->\nMeasured in `")
    assert "| stale |" not in text and "between\n<!-- table: bn_landscape noisy -->\nkept\n<!-- /table -->" in text
    assert "<!-- table: nonsense -->\nkept too\n<!-- /table -->\nend\n" in text
    (grouped,) = (shortened_sweeps.root / "fashion_mnist").glob("*/summary_grouped.csv")
    row = pd.read_csv(grouped).iloc[0]
    assert f"| all | 2 | {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f} |" in text
    assert "bn_landscape noisy: no sweep found; table kept as it was" in proc.stdout
    assert "nonsense: not a table this command makes" in proc.stdout


def test_run_missing_runs_only_the_missing_sweeps_then_builds(shortened_sweeps, tmp_path):
    root = tmp_path / "copied"
    shutil.copytree(shortened_sweeps.root, root)
    shutil.rmtree(root / "symmetry")
    proc = writeup("--from", str(root), "--out", str(tmp_path / "w"), "--run-missing", "dataset=synthetic",
                   "trainer.threads=1", "trainer.epochs=1", "seed=0", "model.hidden=[32,32]", "probe.landscape.every=5",
                   "probe.ics.every=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [line for line in proc.stdout.splitlines() if line.startswith("running: ")]
    assert ran == ["running: -m mlbasics.run -m +experiment=symmetry dataset=synthetic trainer.threads=1 "
                   "trainer.epochs=1 seed=0 model.hidden=[32,32] probe.landscape.every=5 probe.ics.every=5",
                   "running: -m mlbasics.run -m +experiment=bn_landscape model.batchnorm=true "
                   "model.batchnorm_noise=true dataset=synthetic trainer.threads=1 trainer.epochs=1 seed=0 "
                   "model.hidden=[32,32] probe.landscape.every=5 probe.ics.every=5"]
    text = (tmp_path / "w" / "answers.md").read_text()
    assert "Not complete." not in text
    assert "Measured in `outputs/multirun/symmetry/" in section(text, "6.2 c and 6.3 f")  # where the run went
    assert "noisy BatchNorm trains about as well as BatchNorm" in section(text, "6.4")
