"""The report on hand-made sweep folders: grouping arithmetic, and malformed files of every kind."""

from __future__ import annotations

import json
import math
import os
import random

import pandas as pd
import pytest

from conftest import METRICS_HEADER, make_job
from mlbasics import report

@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    make_job(root, "lr=0.1,seed=0", ["optimizer.lr=0.1", "seed=0"], 0.80)
    make_job(root, "lr=0.1,seed=1", ["optimizer.lr=0.1", "seed=1"], 0.90)
    make_job(root, "lr=16,seed=0", ["optimizer.lr=16", "seed=0"], 0.50)
    make_job(root, "lr=16,seed=1", ["optimizer.lr=16", "seed=1"], None, status="diverged")
    make_job(root, "lr=2,seed=0", ["optimizer.lr=2", "seed=0"], 0.70)
    return root


def run_report(*args, capsys):
    report.main([*map(str, args), "--quiet"])
    return capsys.readouterr()


def test_group_counts_mean_and_sample_std(sweep, capsys):
    run_report(sweep, capsys=capsys)
    grouped = pd.read_csv(sweep / "summary_grouped.csv")
    assert grouped["optimizer.lr"].tolist() == [0.1, 2, 16]  # by value, not as text
    first = grouped.iloc[0]
    assert (first["n"], first["completed"], first["diverged"]) == (2, 2, 0)
    assert first["test_acc_mean"] == pytest.approx(0.85)
    assert first["test_acc_std"] == pytest.approx(math.sqrt(2 * 0.05 ** 2 / 1))  # ddof 1
    last = grouped.iloc[2]
    assert (last["n"], last["completed"], last["diverged"], last["test_acc_mean"]) == (2, 1, 1, 0.5)
    assert math.isnan(last["test_acc_std"])  # one completed job has no sample std
    assert "sample standard deviation (ddof 1)" in (sweep / "summary.md").read_text()


def test_curve_features(sweep, capsys):
    run_report(sweep, capsys=capsys)
    table = pd.read_csv(sweep / "summary.csv")
    row = table[table["job"] == "lr=0.1,seed=0"].iloc[0]
    assert row["first_epoch_val_acc_0.80"] == 2 and row["grad_ratio_first_last_epoch1"] == 2.0
    assert row["train_loss_increases"] == 0


def test_deleted_and_quoted_overrides_are_parsed_as_hydra_does(sweep, capsys):
    make_job(sweep, "odd", ["~model.dropout", "+experiment=activations", "model.name='a b'", "optimizer.lr=0.1",
                            "seed=2"], 0.7)
    run_report(sweep, capsys=capsys)
    row = pd.read_csv(sweep / "summary.csv").set_index("job").loc["odd"]
    assert row["status"] == "completed" and row["experiment"] == "activations" and row["model.name"] == "a b"
    assert pd.isna(row["model.dropout"])


MALFORMED = {
    "results_is_a_list": ("results.json", b"[1, 2, 3]", "unreadable results.json: not a JSON object"),
    "test_acc_is_text": ("results.json", json.dumps({"status": "completed", "test_acc": "abc"}).encode(),
                         "test_acc is 'abc', not a number"),
    "unknown_status": ("results.json", b'{"status": "great"}', "unknown status 'great'"),
    "metrics_random_bytes": ("metrics.csv", bytes(range(256)) * 4, "metrics.csv"),
    "metrics_text_values": ("metrics.csv", (METRICS_HEADER + "1,1.0,0.5,0.9,high,0.1,0.5,2.0,1.0\n").encode(),
                            "unreadable metrics.csv: holds values that are not numbers"),
    "metrics_without_val_acc": ("metrics.csv", b"epoch,train_loss\n1,0.5\n", "unreadable metrics.csv: no column val_acc"),
    "config_not_yaml": (".hydra/config.yaml", b"model: [unclosed\n  - {", "config.yaml"),
    "config_a_list": (".hydra/config.yaml", b"- 1\n- 2\n", "unreadable config.yaml: holds a list, not a dict"),
    "overrides_unparsable": (".hydra/overrides.yaml", b"- 'a=b=c]['\n", "overrides.yaml"),
    "overrides_a_dict": (".hydra/overrides.yaml", b"a: 1\n", "unreadable overrides.yaml: holds a dict, not a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_makes_its_row_incomplete(sweep, capsys, case):
    name, content, reason = MALFORMED[case]
    (sweep / "lr=2,seed=0" / name).write_bytes(content)
    out = run_report(sweep, capsys=capsys)
    table = pd.read_csv(sweep / "summary.csv").set_index("job")
    row = table.loc["lr=2,seed=0"]
    assert row["status"] == "incomplete" and row["error"].startswith("unreadable ") and reason in row["error"]
    assert (table.drop(index="lr=2,seed=0")["status"] != "incomplete").all()
    assert "5 jobs: 3 completed, 1 diverged, 0 failed, 1 incomplete" in out.out


def test_folder_name_that_is_not_utf8(sweep, capsys):
    os.makedirs(os.fsencode(sweep) + b"/caf\xe9", exist_ok=True)
    make_job(sweep / os.fsdecode(b"caf\xe9"), "job", ["optimizer.lr=0.1", "seed=5"], 0.75)
    run_report(sweep, capsys=capsys)
    table = pd.read_csv(sweep / "summary.csv")
    assert "caf\\xe9/job" in table["job"].tolist()
    assert not list(sweep.glob(".*.tmp"))


def test_out_that_is_a_file_is_one_line(sweep, tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        report.main([str(sweep), "--out", str(tmp_path / "taken")])
    assert "is a file" in str(stop.value) and (tmp_path / "taken").read_text() == "mine"


def mutate(rng: random.Random, path) -> None:
    """One way a file goes wrong: random bytes, cut short, wrong JSON types, columns gone, emptied."""
    content = path.read_bytes()
    how = rng.randrange(6)
    if how == 0:
        path.write_bytes(rng.randbytes(rng.randrange(1, 400)))
    elif how == 1:
        path.write_bytes(content[: rng.randrange(len(content) + 1)])
    elif how == 2:
        path.write_text(json.dumps(rng.choice([[], "text", 3, None, {"status": 1}, {"status": "completed",
                                                                                     "val_acc": [1]}])))
    elif how == 3:
        lines = content.decode(errors="replace").splitlines()
        path.write_text("\n".join(",".join(line.split(",")[: rng.randrange(1, 4)]) for line in lines))
    elif how == 4:
        path.write_bytes(b"")
    else:
        path.unlink()


def test_fuzzed_sweeps_never_crash_the_report(tmp_path, capsys):
    rng = random.Random(1234)
    for trial in range(40):
        root = tmp_path / f"sweep{trial}"
        for seed in range(3):
            make_job(root, f"seed={seed}", ["optimizer.lr=0.1", f"seed={seed}"], 0.8)
        files = [p for p in root.rglob("*") if p.is_file()]
        for path in rng.sample(files, rng.randrange(1, 5)):
            if path.exists():
                mutate(rng, path)
        try:
            report.main([str(root), "--quiet"])
        except SystemExit as stop:  # only the one-line exits are allowed, e.g. no job folder left at all
            assert isinstance(stop.code, str) and stop.code.startswith("mlbasics.report: ") and "\n" not in stop.code
            continue
        assert "Traceback" not in capsys.readouterr().err
        table = pd.read_csv(root / "summary.csv")
        assert set(table["status"]) <= {"completed", "diverged", "failed", "incomplete"}
        assert not list(root.glob(".*.tmp"))


def test_rows_groups_and_legends_follow_values(sweep, capsys, monkeypatch):
    from mlbasics import plots

    legends, real_save = {}, plots.save

    def keep_legend(fig, path):
        legend = fig.axes[0].get_legend()
        legends[path.name] = [t.get_text() for t in legend.get_texts()] if legend else None
        real_save(fig, path)

    monkeypatch.setattr(plots, "save", keep_legend)
    run_report(sweep, capsys=capsys)
    assert pd.read_csv(sweep / "summary.csv")["optimizer.lr"].tolist() == [0.1, 0.1, 2, 16, 16]
    assert legends["val_acc.png"] == ["optimizer.lr=0.1", "optimizer.lr=2", "optimizer.lr=16"]
    for name in ("val_acc.png", "train_loss.png", "final_test_acc.png"):
        assert (sweep / name).read_bytes()[:4] == b"\x89PNG"


def test_lists_sort_by_length_then_values():
    column = pd.Series(["[128,128,128]", "[64]", "[128,128]", "[256,128]", None])
    order = column.iloc[report.natural_order(column).argsort(kind="stable")].tolist()
    assert order[:4] == ["[64]", "[128,128]", "[256,128]", "[128,128,128]"] and pd.isna(order[4])


def test_columns_lead_the_printed_table(sweep, capsys):
    report.main([str(sweep), "--columns", "grad_ratio_first_last_epoch1"])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("| optimizer.lr | n | completed | diverged | failed | incomplete | "
                             "grad_ratio_first_last_epoch1 | test_acc |")
    with pytest.raises(SystemExit) as stop:
        report.main([str(sweep), "--columns", "nonsense"])
    assert str(stop.value).startswith("mlbasics.report: --columns nonsense: not a result of these jobs")
