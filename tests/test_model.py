"""The MLP builder: layer order, output shapes for every activation, parameter counts."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mlbasics.config import Activation, ModelConfig
from mlbasics.model import build_mlp, count_parameters, linear_layers


def model_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), overrides)


@pytest.mark.parametrize("activation", [a.value for a in Activation])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_output_shape_for_every_activation(activation, batchnorm):
    model = build_mlp(model_cfg(hidden=[16, 8], activation=activation, batchnorm=batchnorm), 20, 5)
    out = model(torch.randn(7, 20))
    assert out.shape == (7, 5)
    kinds = [type(m).__name__ for m in model]
    if batchnorm:
        assert kinds[:3] == ["Linear", "BatchNorm1d", type(build_mlp.__globals__["ACTIVATIONS"][activation]()).__name__]
    else:
        assert "BatchNorm1d" not in kinds


def test_empty_hidden_is_softmax_regression():
    model = build_mlp(model_cfg(hidden=[]), 784, 10)
    assert len(model) == 1 and isinstance(model[0], nn.Linear)
    assert count_parameters(model) == 784 * 10 + 10


def test_parameter_count_matches_hand_count():
    model = build_mlp(model_cfg(hidden=[256, 128], batchnorm=True), 784, 10)
    linear = (784 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)
    batchnorm = 2 * 256 + 2 * 128  # weight and bias; running stats are buffers, not parameters
    assert count_parameters(model) == linear + batchnorm
    assert [layer.out_features for layer in linear_layers(model)] == [256, 128, 10]


def test_dropout_layers_only_when_asked():
    assert not any(isinstance(m, nn.Dropout) for m in build_mlp(model_cfg(dropout=0.0), 4, 2))
    drops = [m for m in build_mlp(model_cfg(hidden=[4, 4], dropout=0.3), 4, 2) if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and drops[0].p == 0.3
