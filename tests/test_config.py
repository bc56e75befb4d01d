"""Config composition, Hydra's enum checks and our range checks."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException as HydraCompositionError

from conftest import run_cli
from mlbasics.config import ConfigError, validate


def test_defaults_compose(make_cfg):
    cfg = make_cfg()
    assert cfg.dataset.name.value == "fashion_mnist"
    assert cfg.trainer.epochs == 10
    assert list(cfg.model.hidden) == [512, 256]
    assert cfg.optimizer.schedule.value == "onecycle"
    assert cfg.device.value == "auto"
    validate(cfg)


def test_overrides_reach_every_key(make_cfg):
    cfg = make_cfg("model.hidden=[256,128]", "model.activation=tanh", "model.batchnorm=false",
                   "optimizer.lr=0.05", "trainer.batch_size=64", "seed=3", "dataset=synthetic",
                   "optimizer.schedule=cosine", "device=cpu")
    assert list(cfg.model.hidden) == [256, 128]
    assert cfg.model.activation.value == "tanh" and cfg.model.batchnorm is False
    assert cfg.optimizer.lr == 0.05 and cfg.trainer.batch_size == 64 and cfg.seed == 3
    assert cfg.dataset.name.value == "synthetic" and cfg.dataset.val_size == 400


def test_data_root_comes_from_environment(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("MLBASICS_DATA", str(tmp_path))
    assert make_cfg().dataset.root == str(tmp_path)


@pytest.mark.parametrize("override, key", [
    ("model.activation=swish", "model.activation"),
    ("optimizer.schedule=step", "optimizer.schedule"),
    ("device=tpu", "device"),
    ("model.batchnorm=maybe", "model.batchnorm"),
    ("trainer.epochs=ten", "trainer.epochs"),
])
def test_wrong_type_or_choice_fails_at_compose(make_cfg, override, key):
    with pytest.raises(HydraCompositionError) as err:
        make_cfg(override)
    assert key in str(err.value.__cause__ or err.value) or key in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("model.hidden=[128,0]", "model.hidden"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("optimizer.momentum=1.0", "optimizer.momentum"),
    ("optimizer.momentum=-0.5", "optimizer.momentum"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("dataset.val_size=60000", "dataset.val_size"),
    ("dataset.val_size=0", "dataset.val_size"),
    ("dataset.train_size=70000", "dataset.train_size"),
    # values that failed late, or never ended, before they were checked here
    ("optimizer.lr=inf", "optimizer.lr"),
    ("optimizer.lr=nan", "optimizer.lr"),
    ("optimizer.lr=1e308", "optimizer.lr"),
    ("optimizer.weight_decay=inf", "optimizer.weight_decay"),
    ("trainer.diverge_loss=nan", "trainer.diverge_loss"),
    ("seed=1180591620717411303424", "seed"),  # 2**70
    ("seed=-1", "seed"),
    ("dataset.split_seed=1180591620717411303424", "dataset.split_seed"),
    ("probe.landscape.points=100000", "probe.landscape.points"),
    ("model.hidden=[1000000]", "model.hidden"),
])
def test_out_of_range_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        validate(make_cfg(override))


def test_largest_allowed_values_pass(make_cfg):
    validate(make_cfg("seed=9223372036854775806", "dataset.split_seed=9223372036854775806",
                      "probe.landscape.points=64", "optimizer.lr=1e30", "model.hidden=[65536]"))
    with pytest.raises(ConfigError, match="^probe.landscape.high=1e\\+38 .*float32"):
        validate(make_cfg("probe.landscape.high=1e38", "optimizer.lr=16"))


def test_cycle_momentum_needs_onecycle(make_cfg):
    with pytest.raises(ConfigError, match="^optimizer.cycle_momentum=True .*onecycle"):
        validate(make_cfg("optimizer.cycle_momentum=true", "optimizer.schedule=cosine"))


def test_nesterov_needs_momentum(make_cfg):
    with pytest.raises(ConfigError, match="^optimizer.nesterov=True.*momentum"):
        validate(make_cfg("optimizer.momentum=0", "optimizer.nesterov=true"))
    validate(make_cfg("optimizer.momentum=0", "optimizer.nesterov=false"))


def test_cli_range_error_is_one_line_and_nonzero(tmp_path):
    proc = run_cli("dataset=synthetic", "optimizer.lr=-1", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["mlbasics: optimizer.lr=-1.0 is not allowed: must be > 0"]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_cli_bad_choice_names_key_and_allowed_values(tmp_path):
    proc = run_cli("model.activation=swish", cwd=tmp_path)
    assert proc.returncode != 0
    assert "model.activation" in proc.stderr
    assert "relu" in proc.stderr and "gelu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("results.json"))
