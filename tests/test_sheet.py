"""The analytic steps of `python -m mlbasics.sheet`, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from mlbasics import sheet

W1 = [[-0.2, 0.9, 0.4], [-0.1, 0.3, 0.4], [0.2, 0.5, -0.7], [0.2, -0.5, 0.5]]
W2 = [[0.6, -0.2], [-0.1, 0.8], [-0.5, -0.3]]


@pytest.mark.parametrize("x, z1, z2", [
    # by hand: z1_j = sum_i x_i W1_ij; h = max(z1, 0); z2_k = sum_j h_j W2_jk
    ([1, 2, -1, 0.5], [-0.5, 0.75, 2.15], [-1.15, -0.045]),
    ([1, 1, 1, 1], [0.1, 1.2, 0.6], [-0.36, 0.76]),
    ([0, 0, 0, 1], [0.2, -0.5, 0.5], [-0.13, -0.19]),
])
def test_forward_pass_matches_hand_computation(x, z1, z2):
    out = sheet.forward_pass(x, W1, W2)
    assert out["z1"] == pytest.approx(z1, abs=1e-12)
    assert out["h"] == pytest.approx([max(v, 0) for v in z1], abs=1e-12)
    assert out["z2"] == pytest.approx(z2, abs=1e-12)
    p1 = 1 / (1 + math.exp(z2[1] - z2[0]))  # two-class softmax is a sigmoid of the difference
    assert out["softmax"] == pytest.approx([p1, 1 - p1], abs=1e-12)


def run_sheet(*argv, capsys):
    """`python -m mlbasics.sheet ARGV` in this process: (exit message or None, stdout)."""
    try:
        sheet.main(list(argv))
    except SystemExit as stop:
        return stop.code, capsys.readouterr().out
    return None, capsys.readouterr().out


def test_forward_pass_cli_prints_formulas_and_result(capsys):
    stop, out = run_sheet("x=[1,1,1,1]", "steps=[forward]", capsys=capsys)
    assert stop is None
    lines = out.strip().splitlines()
    assert "z1 = x W1 = [0.1, 1.2, 0.6]" in out
    assert "h = ReLU(z1) = [0.1, 1.2, 0.6]" in out
    assert "z2 = h W2 = [-0.36, 0.76]" in out
    p1 = 1 / (1 + math.exp(0.76 + 0.36))
    assert lines[-1] == f"softmax = [{p1:.6g}, {1 - p1:.6g}]"


def test_forward_pass_weights_can_be_overridden(capsys):
    _, out = run_sheet("x=[1,2]", "W1=[[1,0],[0,1]]", "W2=[[1,0],[0,1]]", "steps=[forward]", capsys=capsys)
    p1 = 1 / (1 + math.exp(1))
    assert out.strip().splitlines()[-1] == f"softmax = [{p1:.6g}, {1 - p1:.6g}]"


def test_bad_input_is_one_line(capsys):
    stop, _ = run_sheet("x=[1,2,3]", "steps=[forward]", capsys=capsys)
    assert stop.startswith("mlbasics.sheet: ") and "x has 3 numbers" in stop and "\n" not in stop
    stop, _ = run_sheet("steps=[newton]", capsys=capsys)
    assert "allowed: identities" in stop and "\n" not in stop


def test_identities_hold_to_rounding():
    errors = sheet.identities()
    assert len(errors) == 4
    assert all(0 <= e < 1e-12 for e in errors.values()), errors


def test_mse_is_convex_with_hessian_2xtx():
    out = sheet.mse_convexity(seed=3)
    assert out["hessian_vs_2XtX_max_abs_diff"] < 1e-10
    assert out["hessian_min_eigenvalue"] >= -1e-9
    assert out["jensen_max_violation"] <= 1e-9
    assert out["gd_minimum_spread"] < 1e-8 and out["gd_minimum_vs_lstsq"] < 1e-8


def test_naive_softmax_overflows_and_the_shift_fixes_it():
    out = sheet.softmax_stability()
    assert math.isnan(out["naive_softmax"][0])
    assert out["stable_softmax"] == [1.0, 0.0, 0.0]
    assert out["stable_log_softmax"] == pytest.approx([0.0, -1000.0, -2000.0])
    assert out["torch_log_softmax"] == pytest.approx(out["stable_log_softmax"])


def test_newton_cost_of_the_default_network():
    out = sheet.newton_cost()
    p = (784 * 512 + 512) + 2 * 512 + (512 * 256 + 256) + 2 * 256 + (256 * 10 + 10)
    assert out["parameters_p"] == p == 537_354
    assert out["hessian_entries"] == p ** 2
    assert out["hessian_gib_float32"] == pytest.approx(p ** 2 * 4 / 2 ** 30)
    assert out["newton_over_sgd"] > 1e6


def test_newton_one_step_and_gd_needs_many():
    out = sheet.newton_vs_gd(condition=100.0)
    assert out["condition_number"] == pytest.approx(100.0)
    assert out["newton_error_after_1_step"] < 1e-10
    # GD's error contracts at least by (kappa - 1) / (kappa + 1) per step with the best fixed step
    assert 1 < out["gd_steps_to_tol"] <= out["gd_steps_predicted"]
    assert sheet.newton_vs_gd(condition=10.0)["gd_steps_to_tol"] < out["gd_steps_to_tol"]


def test_batchnorm_single_sample_fails_in_training_and_works_in_eval():
    out = sheet.batchnorm_single_sample()
    assert out["train_mode_single_sample"].startswith("Expected more than 1 value per channel when training")
    assert len(out["eval_mode_single_sample_output"]) == 3
    assert out["eval_single_vs_batched_max_abs_diff"] < 1e-6
