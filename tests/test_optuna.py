"""hydra/sweeper=optuna (synthetic data, in seconds): the search space, a study's files, divergence, resume,
bad settings."""

from __future__ import annotations

import json

import optuna.distributions as dist
import pandas as pd
import pytest

from conftest import run_cli
from mlbasics.optuna_sweep import SearchSpaceError, as_override, search_space

STUDY = ("dataset=synthetic", "trainer.epochs=1", "model.hidden=[16]", "hydra/sweeper=optuna")


def test_search_space_from_hydra_override_syntax():
    fixed, space, arms = search_space(["optimizer.lr=tag(log,interval(1e-3,1))",
                                       "model.hidden=choice([256,128],[512,256])", "model.activation=choice(relu,tanh)",
                                       "seed=range(0,6,2)", "trainer.epochs=3", "optimizer.momentum=0,0.9",
                                       "trainer.batch_size=tag(int,interval(16,64))", "model.dropout=interval(0,0.5)"])
    assert fixed == ["trainer.epochs=3"]
    assert arms == ["optimizer.momentum=0,0.9"]  # a plain list is a grid of arms, not searched
    assert space["optimizer.lr"] == dist.FloatDistribution(1e-3, 1.0, log=True)
    assert space["model.hidden"] == dist.CategoricalDistribution(["[256,128]", "[512,256]"])
    assert space["model.activation"] == dist.CategoricalDistribution(["relu", "tanh"])
    assert space["seed"] == dist.IntDistribution(0, 4, step=2)
    assert space["trainer.batch_size"] == dist.IntDistribution(16, 64)
    assert space["model.dropout"] == dist.FloatDistribution(0.0, 0.5)
    assert as_override("model.hidden", "[256,128]") == "model.hidden=[256,128]"
    assert as_override("optimizer.lr", 0.1 + 0.2) == "optimizer.lr=0.30000000000000004"  # exactly the sampled value


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=tag(log,interval(0,1))", "start > 0 on a log scale"),
    ("optimizer.lr=interval(1,0.5)", "must have start < end"),
    ("optimizer.lr=range(0.1,1,0.1)", "range() over floats"),
    ("seed=glob(*)", "Optuna cannot sample this"),
])
def test_a_space_optuna_cannot_express_is_named(override, message):
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_space([override])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("study") / "sweep"
    proc = run_cli("-m", *STUDY, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
                   "optimizer.lr=tag(log,interval(1e-3,1))", "model.activation=choice(relu,tanh)",
                   f"hydra.sweep.dir={sweep}", cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc


def test_a_study_writes_its_trials_best_and_the_usual_tables(study):
    sweep, proc = study
    trials = pd.read_csv(sweep / "study.csv")
    assert list(trials["number"]) == list(range(6)) and (trials["state"] == "COMPLETE").all()
    assert list(trials["folder"]) == [f"trial_{n:04d}" for n in range(6)]
    best = json.loads((sweep / "best.json").read_text())
    assert best["value"] == trials["value"].max() and best["objective"] == "val_acc"
    assert set(best["params"]) == {"optimizer.lr", "model.activation"}
    summary = pd.read_csv(sweep / "summary.csv").set_index("job")
    for _, trial in trials.iterrows():  # each trial's value is its job's val_acc, and it trained what it says
        row = summary.loc[trial["folder"]]
        assert row["val_acc"] == trial["value"]
        assert row["optimizer.lr"] == pytest.approx(trial["params_optimizer.lr"], rel=1e-12)
        assert row["model.activation"] == trial["params_model.activation"]
    for name in ("optimization_history.png", "param_importances.png"):
        assert (sweep / name).read_bytes()[:4] == b"\x89PNG"
    assert "6 jobs: 6 completed" in proc.stdout + proc.stderr


def test_more_trials_continue_the_study_without_training_the_old_ones_again(study, tmp_path):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(study[0], sweep)
    before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("trial_*/results.json")}
    proc = run_cli("-m", *STUDY, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2",
                   "optimizer.lr=tag(log,interval(1e-3,1))", "model.activation=choice(relu,tanh)",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "trials trial_0006, trial_0007" in log and "trial_0000," not in log
    after = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("trial_*/results.json")}
    assert {name: after[name] for name in before} == before and len(after) == 8
    trials = pd.read_csv(sweep / "study.csv")
    assert len(trials) == 8
    assert not set(trials["params_optimizer.lr"][6:]) & set(trials["params_optimizer.lr"][:6])  # new values drawn


def test_an_interrupted_study_continues_where_it_stopped(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "mlbasics.run", "-m", "dataset=synthetic", "trainer.epochs=20",
               "model.hidden=[256,256]", "trainer.batch_size=8", "trainer.threads=1", "hydra/sweeper=optuna",
               "hydra.sweeper.n_trials=3", "optimizer.lr=tag(log,interval(1e-3,1e-1))", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (sweep / "trial_0001" / "checkpoint.pt").exists():
        time.sleep(0.05)  # trial 0 done, trial 1 has saved an epoch
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    first = (sweep / "trial_0000" / "results.json").stat().st_mtime_ns
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = pd.read_csv(sweep / "study.csv")
    assert list(trials["number"]) == [0, 1, 2] and (trials["state"] == "COMPLETE").all()
    assert (sweep / "trial_0000" / "results.json").stat().st_mtime_ns == first  # not trained again
    assert "resuming from" in (sweep / "trial_0001" / "run.log").read_text()  # cut short: continued


def test_diverged_trials_are_pruned_and_the_study_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    # lr 1e6 at batch size 64 diverges; the random sampler with seed 0 draws it three times in four
    proc = run_cli("-m", *STUDY, "trainer.batch_size=64", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler=random",
                   "optimizer.lr=choice(0.1,1e6)", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_csv(sweep / "study.csv")
    assert sorted(trials["state"]) == ["COMPLETE", "PRUNED", "PRUNED", "PRUNED"]
    assert (trials.loc[trials["state"] == "PRUNED", "params_optimizer.lr"] == 1e6).all()
    assert json.loads((sweep / "best.json").read_text())["params"] == {"optimizer.lr": 0.1}


@pytest.mark.parametrize("setting, line", [
    ("hydra.sweeper.n_trials=0", "mlbasics: hydra.sweeper.n_trials=0 is not allowed: must be an integer >= 1"),
    ("hydra.sweeper.sampler=cmaes", "mlbasics: hydra.sweeper.sampler=cmaes is not allowed: one of tpe, random"),
    ("hydra.sweeper.objective=test_acc", "mlbasics: hydra.sweeper.objective=test_acc is not allowed: one of "
     "val_acc, val_loss, best_val_acc, train_acc, train_loss (a key of results.json; the test set never chooses)"),
    ("seed=glob(*)", "mlbasics: hydra/sweeper=optuna: seed=glob(*): Optuna cannot sample this; use choice(), "
     "interval(), tag(log,interval()) or range()"),
    ("hydra.sweeper.confirm=['seed=interval(0,1)']", "mlbasics: hydra/sweeper=optuna: hydra.sweeper.confirm: "
     "seed=interval(0,1): give a value or a list of values (a,b,c)"),
])
def test_a_bad_setting_is_one_line_before_any_trial(tmp_path, setting, line):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *STUDY, "optimizer.lr=interval(0.01,0.1)", setting, f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == line
    assert not list(sweep.glob("trial_*"))



def test_a_journal_that_is_not_a_study_is_one_line_and_left_as_it_is(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    journal = sweep / "optuna-journal.log"
    journal.write_bytes(b'{"op_code": 0, "worker_id": "x"\n\x00\xffgarbage\n')
    before = journal.read_bytes()
    proc = run_cli("-m", *STUDY, "optimizer.lr=interval(0.01,0.1)", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlbasics: {journal} is not a study this sweeper can read (")
    assert lines[0].endswith("nothing was changed: move it aside to start a new study in this folder")
    assert journal.read_bytes() == before and not list(sweep.glob("trial_*"))




def test_each_arm_is_tuned_alike_then_its_best_is_confirmed_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "+experiment=activations_tuned", "dataset=synthetic", "trainer.epochs=1",
                   "hydra.sweeper.n_trials=3", "model.activation=relu,tanh", "model.hidden=[16],[16,16]",
                   "hydra.sweeper.confirm=['seed=0,1']",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # batches hold n_jobs=2 trials of every arm (4 arms): 8, then the third trial of each, then 4 x 2 seeds
    output = (proc.stdout + proc.stderr).splitlines()
    assert [line.split("Launching ")[1].split()[0] for line in output if "Launching" in line] \
        == ["8", "4", "8"]
    trials = pd.read_csv(sweep / "study.csv")
    arms = ["model.activation=relu,model.hidden=[16]", "model.activation=relu,model.hidden=[16,16]",
            "model.activation=tanh,model.hidden=[16]", "model.activation=tanh,model.hidden=[16,16]"]
    assert sorted(set(trials["arm"])) == sorted(arms) and (trials["state"] == "COMPLETE").all()
    for arm, group in trials.groupby("arm"):
        assert list(group["folder"]) == [f"{arm}/trial_{n:04d}" for n in range(3)]
        assert all((sweep / folder / "results.json").is_file() for folder in group["folder"])
    # the same seed draws the same learning rates for every arm: the budget is spent alike
    rates = {arm: tuple(group["params_optimizer.lr"]) for arm, group in trials.groupby("arm")}
    assert len(set(rates.values())) == 1
    best = json.loads((sweep / "best.json").read_text())
    assert best["objective"] == "val_acc" and sorted(best["arms"]) == sorted(arms)
    confirmed = {}
    for arm, entry in best["arms"].items():
        mine = trials[trials["arm"] == arm]
        assert entry["value"] == mine["value"].max()
        lr = entry["params"]["optimizer.lr"]
        for seed in (0, 1):
            job = sweep / "confirm" / arm / f"trial_{entry['number']:04d},seed={seed}"
            results = json.loads((job / "results.json").read_text())
            assert results["status"] == "completed" and results["seed"] == seed
            assert results["config"]["optimizer"]["lr"] == lr
            activation, hidden = arm.split(",model.hidden=")
            assert results["config"]["model"]["activation"] == activation.split("=")[1]
            assert json.dumps(results["config"]["model"]["hidden"], separators=(",", ":")) == hidden
            confirmed.setdefault(arm, []).append(results["test_acc"])
    table = pd.read_csv(sweep / "confirm" / "summary_grouped.csv")
    assert list(table["n"]) == [2, 2, 2, 2] and list(table["completed"]) == [2, 2, 2, 2]
    for _, row in table.iterrows():
        accs = confirmed[f"model.activation={row['model.activation']},model.hidden={row['model.hidden']}"]
        assert row["test_acc_mean"] == pytest.approx(sum(accs) / 2)
    # the usual report of the whole sweep: every trial and every confirmation a row
    assert len(pd.read_csv(sweep / "summary.csv")) == 12 + 8
    assert (sweep / "optimization_history.png").stat().st_size > 0


def test_a_continued_study_of_arms_adds_trials_to_each_arm_and_trains_no_old_one_again(tmp_path):
    sweep = tmp_path / "sweep"
    common = ("-m", *STUDY, "optimizer.lr=tag(log,interval(1e-2,1))", "model.activation=relu,tanh",
              f"hydra.sweep.dir={sweep}")
    first = run_cli(*common, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    done = {p: p.stat().st_mtime_ns for p in sweep.glob("*/trial_*/results.json")}
    assert len(done) == 2
    again = run_cli(*common, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = pd.read_csv(sweep / "study.csv")
    assert sorted(trials.groupby("arm")["number"].apply(list).tolist()) == [[0, 1], [0, 1]]
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done.items())  # not trained again
    assert "trials model.activation=relu/trial_0001, model.activation=tanh/trial_0001" in again.stdout + again.stderr
