"""Every experiments/NAME.yaml composes and runs, shortened, on the synthetic set, from any folder."""

from __future__ import annotations

import pandas as pd
import yaml
import pytest

from conftest import SHORTENED
from mlbasics.config import EXPERIMENTS_DIR

EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
def test_every_experiment_is_covered():
    assert sorted(SHORTENED) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_shortened(name, shortened_sweeps):
    proc = shortened_sweeps.runs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = (shortened_sweeps.root / name).glob("*/summary.csv")
    table = pd.read_csv(summary_path)
    check = globals()[f"check_{name}"]
    check(table)
    leading = yaml.safe_load((EXPERIMENTS_DIR / f"{name}.yaml").read_text()).get("report", {}).get("columns", [])
    header = (summary_path.parent / "summary.md").read_text().splitlines()[0]
    statuses = "| n | completed | diverged | failed | incomplete | "
    assert statuses + " | ".join(leading) in header, header  # the printed table leads with them
    if name == "bn_landscape":  # the Figure 4 analogue, and its data in long form
        assert (summary_path.parent / "landscape.png").read_bytes()[:4] == b"\x89PNG"
        assert (summary_path.parent / "landscape_curves.csv").exists()


def check_fashion_mnist(table):
    assert len(table) == 2 and (table["status"] == "completed").all()
    assert (table["model.hidden"] == "[512,256]").all()


def check_no_activation(table):
    assert len(table) == 8
    assert (table["status"] == "completed").all()
    identity = table[table["model.activation"] == "identity"]
    # an identity network is one affine map: the folded product reproduces its outputs
    assert (identity["collapse_max_abs_diff"] < 1e-4 * identity["collapse_output_scale"]).all()
    deep_relu = table[(table["model.activation"] == "relu") & (table["model.hidden"] != "[]")]
    assert (deep_relu["collapse_max_abs_diff"] > 1e-2).all()


def check_activations(table):
    assert len(table) == 9
    assert set(table["model.activation"]) == {"relu", "sigmoid", "tanh"}
    # one epoch: the first epoch reaching 80 % validation accuracy is 1 exactly where the final val_acc is
    reached = table["first_epoch_val_acc_0.80"] == 1
    assert (reached == (table["val_acc"] >= 0.80)).all() and table.loc[~reached, "first_epoch_val_acc_0.80"].isna().all()
    # vanishing gradients: a sigmoid's first-layer gradient shrinks with depth (sigma' <= 1/4 per layer)
    ratio = table.set_index(["model.activation", "model.hidden"])["grad_ratio_first_last_epoch1"]
    sigmoid = [ratio[("sigmoid", "[" + ",".join(["128"] * depth) + "]")] for depth in (2, 5, 10)]
    assert sigmoid[0] > sigmoid[1] > sigmoid[2] and sigmoid[2] < 1e-4 < ratio[("relu", "[128,128]")]
    # rows ordered by depth as numbers and lists, not as text
    assert table["model.hidden"].str.count("128").tolist()[:3] == [2, 5, 10]


def check_lr_convex(table):
    by_lr = table.set_index("optimizer.lr")
    assert by_lr.loc[0.5, "status"] == "completed"
    assert by_lr.loc[64, "status"] == "diverged"
    assert by_lr["smoothness_L"].nunique() == 1 and (by_lr["smoothness_L"] > 0).all()
    assert by_lr.loc[0.5, "lr_effective"] == pytest.approx(0.5 * 2 / by_lr.loc[0.5, "smoothness_L"])


def check_batchnorm_bs1(table):
    assert len(table) == 8
    status = table.set_index(["model.batchnorm", "trainer.batch_size"])["status"]
    assert status[(True, 1)] == "failed"
    assert status[(False, 1)] == "completed"
    assert status[(True, 2)] == "completed"
    error = table.set_index(["model.batchnorm", "trainer.batch_size"]).loc[(True, 1), "error"]
    assert "Expected more than 1 value per channel when training" in error


def check_symmetry(table):
    (row,) = table.to_dict("records")
    assert row["status"] == "completed"
    assert row["symmetry_permuted_loss_diff"] < 1e-4
    assert row["symmetry_jensen_gap"] > 0


def check_bn_landscape(table):
    assert len(table) == 4
    for column in ("landscape_loss_range_first", "landscape_gradpred_last", "landscape_beta_eff_first",
                   "ics_l2_fc1", "ics_cos_fc4"):
        assert column in table.columns, column
    completed = table[table["status"] == "completed"]
    assert (completed["ics_l2_fc1"] == 0).all() and (completed["landscape_beta_eff_first"] > 0).all()


def check_activations_tuned(table):
    # 2 arms x 2 trials, then each arm's best trial with seeds 0 and 1
    assert len(table) == 8 and (table["status"] == "completed").all()
    confirmed = table["job"].str.startswith("confirm/")
    assert confirmed.sum() == 4 and table.loc[~confirmed, "job"].str.contains("/trial_").all()
