"""The run's files, in milliseconds: atomic writes, leftovers, moving aside, fingerprints; threads per job."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from mlbasics import records
from mlbasics.run import threads_per_job


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "results.json"
    records.write_results(path, {"status": "completed"})

    def half_then_fail(tmp):
        tmp.write_text('{"stat')
        raise OSError(28, "No space left on device")

    with pytest.raises(records.OutputError, match=f"^could not write {path}: No space left on device$"):
        records.write_atomically(path, half_then_fail)
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_write_interrupted_by_ctrl_c_leaves_no_temporary_file(tmp_path):
    def interrupted(tmp):
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.write_atomically(tmp_path / "metrics.csv", interrupted)
    assert not list(tmp_path.iterdir())


def test_metrics_rows_may_differ_in_columns(tmp_path):
    records.write_metrics(tmp_path / "m.csv", [{"step": 0, "loss": 1.5}, {"step": 3, "ics_l2_fc1": 0.0}])
    assert (tmp_path / "m.csv").read_text() == "step,loss,ics_l2_fc1\n0,1.5,\n3,,0.0\n"


def test_read_results_only_returns_objects(tmp_path):
    path = tmp_path / "results.json"
    for content, expected in (('{"a": 1}', {"a": 1}), ("[1, 2]", None), ('{"a": ', None), ("", None)):
        path.write_text(content)
        assert records.read_results(path) == expected, content
    assert records.read_results(tmp_path / "missing.json") is None


def test_fingerprint_ignores_keys_that_do_not_change_numbers():
    config = {"optimizer": {"lr": 0.1}, "dataset": {"root": "/a", "name": "x"}, "trainer": {"threads": 2},
              "device": "auto", "report": {"columns": []}}
    moved = {**config, "dataset": {"root": "/b", "name": "x"}, "trainer": {"threads": 1}, "device": "cpu",
             "report": {"columns": ["a"]}}
    assert records.fingerprint(config) == records.fingerprint(moved)
    other = records.fingerprint({**config, "optimizer": {"lr": 0.2}})
    assert other[0] != records.fingerprint(config)[0] and other[1] == {"optimizer.lr": 0.2, "dataset.name": "x"}


def test_config_differences_name_old_and_new_values():
    old, new = {"optimizer.lr": 0.1, "seed": 0, "gone": 1}, {"optimizer.lr": 0.2, "seed": 0, "added": [1, 2]}
    assert records.config_differences(old, new) == ["added: (unset) -> [1, 2]", "gone: 1 -> (unset)",
                                                    "optimizer.lr: 0.1 -> 0.2"]


def test_move_aside_keeps_every_file(tmp_path):
    (tmp_path / "results.json").write_text("r")
    (tmp_path / "metrics.csv").write_text("m")
    (tmp_path / "notes.txt").write_text("mine")
    aside = records.move_aside(tmp_path)
    assert sorted(p.name for p in aside.iterdir()) == ["metrics.csv", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([aside.name, "notes.txt"])
    assert records.move_aside(tmp_path) is None  # nothing left to move


def test_stale_temporary_files_go_but_live_ones_and_others_stay(tmp_path):
    import os
    live = tmp_path / f".results.json.{os.getppid()}.tmp"  # a process that exists: still writing
    dead = tmp_path / ".metrics.csv.999999999.tmp"
    foreign = tmp_path / ".notes.txt.999999999.tmp"
    for path in (live, dead, foreign):
        path.write_text("x")
    assert records.remove_stale_temp_files(tmp_path) == [dead]
    assert live.exists() and foreign.exists() and not dead.exists()


@pytest.mark.parametrize("launcher, cores, threads", [
    ({"n_jobs": 2}, 8, 4), ({"n_jobs": -1}, 8, 1), ({"n_jobs": -2}, 8, 1), ({"n_jobs": 3}, 2, 1),
    ({"cpus_per_task": 4}, 64, 4), ({}, 8, 5),
])
def test_threads_per_job_divides_the_cores(monkeypatch, launcher, cores, threads):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr("mlbasics.run.free_cores", lambda: 5)  # one job alone: the cores no one else keeps busy
    assert threads_per_job(OmegaConf.create(launcher)) == threads
