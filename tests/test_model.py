"""The MLP builder: layer order, output shapes for every activation, parameter counts."""

from __future__ import annotations

import math

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
        assert kinds[:2] == ["Linear", "BatchNorm1d"] and kinds[3] == "Linear"
    else:
        assert "BatchNorm1d" not in kinds and kinds[0] == "Linear" and kinds[2] == "Linear"


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


@pytest.mark.parametrize("activation, expected", [
    ("relu", [0.0, 0.0, 0.5, 2.0]),
    ("sigmoid", [1 / (1 + math.exp(2)), 1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-2))]),
    ("tanh", [math.tanh(-2), math.tanh(-0.5), math.tanh(0.5), math.tanh(2)]),
    ("identity", [-2.0, -0.5, 0.5, 2.0]),
    ("leaky_relu", [-0.02, -0.005, 0.5, 2.0]),
    ("gelu", [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in (-2.0, -0.5, 0.5, 2.0)]),
])
def test_each_activation_computes_its_formula(activation, expected):
    """The hidden layer's output for inputs whose pre-activations are known: values from the formulas."""
    model = build_mlp(model_cfg(hidden=[4], activation=activation, batchnorm=False), 4, 2)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
    hidden = model[:2](torch.tensor([[-2.0, -0.5, 0.5, 2.0]]))
    assert hidden[0].tolist() == pytest.approx(expected, abs=1e-6)
