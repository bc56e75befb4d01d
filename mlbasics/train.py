"""One training run, top to bottom: data, model, SGD, epochs, metrics, checkpoint, results.

`train(cfg, out_dir)` never raises for something that went wrong in training: a non-finite
loss ends the run as `diverged`, an exception as `failed` with its message, and both are
written to results.json like a completed run, so a sweep can tabulate every outcome.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm import tqdm

from mlbasics import probes, records
from mlbasics.config import ConfigError, Device, LrUnit, Schedule, validate
from mlbasics.data import DataUnavailable, Splits, batch_indices, load_splits
from mlbasics.model import build_mlp, count_parameters, linear_layers

log = logging.getLogger(__name__)
SYMMETRY_SAMPLE = 10_000  # training images on which the symmetry probe measures the loss
EVAL_BATCH = 8192  # evaluation needs no gradients, so large batches only save Python overhead


class Diverged(RuntimeError):
    """The training loss became inf or nan."""


def resolve_device(choice: Device) -> torch.device:
    """`auto` takes CUDA when there is one; asking for `cuda` without one is a user error."""
    if choice == Device.cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda is not allowed here: no CUDA device is available (use auto or cpu)")
    if choice == Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode, so BatchNorm uses its running statistics."""
    model.eval()
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), EVAL_BATCH):
        logits = model(x[start:start + EVAL_BATCH])
        target = y[start:start + EVAL_BATCH]
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def make_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int, peak_lr: float):
    """Stepped once per batch, so the schedule does not depend on the epoch boundary."""
    if cfg.schedule == Schedule.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == Schedule.onecycle:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak_lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def steps_per_epoch(n: int, batch_size: int) -> int:
    steps = math.ceil(n / batch_size)
    return steps - 1 if batch_size > 1 and steps > 1 and n % batch_size == 1 else steps


def rng_state(batch_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "batches": batch_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], batch_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    batch_gen.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def flip_half(x: torch.Tensor, image_shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left to right (a garment mirrored is the same garment)."""
    mirrored = x.view(-1, *image_shape).flip(2).view(len(x), -1)
    pick = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(pick[:, None], mirrored, x)


def train_epoch(model, optimizer, scheduler, data: Splits, batch_size: int, batch_gen: torch.Generator,
                epoch: int, hflip: bool = False, label_smoothing: float = 0.0,
                diverge_loss: float | None = None, step_probes: probes.StepProbes | None = None,
                first_step: int = 0, probe_rows: list | None = None) -> dict[str, float]:
    """One pass over the training split; returns the epoch's running metrics and mean grad norms.

    Steps are numbered from `first_step` across epochs; where `step_probes` is due, its row (taken
    after backward, before the optimizer step, without changing anything) goes to `probe_rows`.
    """
    model.train()
    linears = linear_layers(model)
    device = data.train_x.device
    loss_sum, correct = 0.0, torch.zeros((), dtype=torch.long, device=device)
    grad_norm_sum = torch.zeros(len(linears), device=device)
    n_steps = steps_per_epoch(len(data.train_y), batch_size)
    bar = tqdm(batch_indices(len(data.train_y), batch_size, batch_gen, device), total=n_steps,
               desc=f"epoch {epoch}", leave=False, disable=not sys.stderr.isatty())
    for step, idx in enumerate(bar, start=first_step):
        x, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
        if hflip:
            x = flip_half(x, data.image_shape, batch_gen)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)
        loss_value = loss.item()  # the one sync per step: a diverging run stops at its first bad step
        if not math.isfinite(loss_value) or (diverge_loss is not None and loss_value > diverge_loss):
            raise Diverged(f"training loss is {loss_value} at epoch {epoch}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm_sum += torch.stack([torch.linalg.vector_norm(layer.weight.grad) for layer in linears])
        if step_probes is not None and step_probes.due(step):
            probe_rows.append(step_probes.measure(model, x, y, optimizer.param_groups[0]["lr"], step, epoch))
        optimizer.step()
        scheduler.step()
        loss_sum += loss_value * len(y)
        correct += (logits.argmax(1) == y).sum()
    n = len(data.train_y)
    row = {"train_loss": loss_sum / n, "train_acc": correct.item() / n}
    grad_norms = (grad_norm_sum / n_steps).tolist()
    row.update({f"grad_norm_fc{i + 1}": g for i, g in enumerate(grad_norms)})
    return row


def slurm_identity() -> dict[str, Any]:
    """The SLURM job this run is (array jobs as ARRAY_INDEX, as squeue shows them), and its restarts."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in env
           else env["SLURM_JOB_ID"])
    return {"slurm_job_id": job, "slurm_restarts": int(env.get("SLURM_RESTART_COUNT", 0))}


def run_probes(cfg, model: nn.Sequential, data: Splits, seed: int, out_dir: Path, results: dict) -> None:
    """The end-of-training measurements the config asks for; each works on a copy of the model."""
    if cfg.collapse:
        results.update(probes.collapse(model, data.test_x))
    if cfg.symmetry:
        sample_x, sample_y = data.train_x[:SYMMETRY_SAMPLE], data.train_y[:SYMMETRY_SAMPLE]
        summary, curve = probes.symmetry(model, sample_x, sample_y, seed=seed)
        results.update(summary)
        records.write_metrics(out_dir / "symmetry.csv", curve)


def train(cfg, out_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume, or skip if already completed) the job whose folder is `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / records.RESULTS_FILE
    earlier = records.read_results(results_path)
    if earlier and earlier.get("status") == "completed":
        log.info("already completed in %s; nothing to do", out_dir)
        return earlier

    started = time.perf_counter()
    results: dict[str, Any] = {
        "status": "running", "error": None, **{f"{split}_{metric}": None for split in ("train", "val", "test")
                                               for metric in ("acc", "loss")},
        "seed": cfg.seed, "device": None, "n_params": None, **slurm_identity(),
        "overrides": list(overrides), "git_commit": records.git_commit(), "versions": records.versions(),
    }
    checkpoint_path = out_dir / records.CHECKPOINT_FILE
    progress: dict[str, Any] = {"rows": [], "probe_rows": [], "best_val_acc": -1.0, "best_epoch": 0,
                                "seconds_before": 0.0}
    try:
        validate(cfg)
        device = resolve_device(cfg.device)
        results["device"] = str(device)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        torch.manual_seed(cfg.seed)
        data = load_splits(cfg.dataset, device)
        if cfg.dataset.hflip and data.image_shape is None:
            raise ConfigError("dataset.hflip=true is not allowed here: the synthetic set has no images to mirror")
        model = build_mlp(cfg.model, data.n_features, data.n_classes).to(device)
        results["n_params"] = count_parameters(model)
        lr = cfg.optimizer.lr
        if cfg.optimizer.lr_unit == LrUnit.two_over_L:
            results["smoothness_L"] = probes.softmax_regression_smoothness(data.train_x)
            lr = cfg.optimizer.lr * 2 / results["smoothness_L"]
        results["lr_effective"] = lr
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.optimizer.momentum,
                                    nesterov=cfg.optimizer.nesterov, weight_decay=cfg.optimizer.weight_decay)
        steps = steps_per_epoch(len(data.train_y), cfg.trainer.batch_size)
        total_steps = cfg.trainer.epochs * steps
        step_probes = probes.StepProbes(cfg.probe, cfg.trainer.label_smoothing)
        step_probes = step_probes if step_probes.active else None
        scheduler = make_scheduler(cfg.optimizer, optimizer, total_steps, peak_lr=lr)
        batch_gen = torch.Generator().manual_seed(cfg.seed)

        checkpoint = records.load_checkpoint(checkpoint_path)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"], batch_gen)
            progress = checkpoint["progress"]
            log.info("resuming from %s after epoch %d", checkpoint_path, len(progress["rows"]))

        for epoch in range(len(progress["rows"]) + 1, cfg.trainer.epochs + 1):
            epoch_start = time.perf_counter()
            row = {"epoch": epoch}
            running = train_epoch(model, optimizer, scheduler, data, cfg.trainer.batch_size, batch_gen, epoch,
                                  hflip=cfg.dataset.hflip, label_smoothing=cfg.trainer.label_smoothing,
                                  diverge_loss=cfg.trainer.diverge_loss, step_probes=step_probes,
                                  first_step=(epoch - 1) * steps, probe_rows=progress["probe_rows"])
            row["train_loss"], row["train_acc"] = running.pop("train_loss"), running.pop("train_acc")
            row["val_loss"], row["val_acc"] = evaluate(model, data.val_x, data.val_y)
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["epoch_seconds"] = time.perf_counter() - epoch_start
            row.update(running)
            progress["rows"].append(row)
            if row["val_acc"] > progress["best_val_acc"]:
                progress["best_val_acc"], progress["best_epoch"] = row["val_acc"], epoch
            records.write_metrics(out_dir / records.METRICS_FILE, progress["rows"])
            if progress["probe_rows"]:
                records.write_metrics(out_dir / records.LANDSCAPE_FILE, progress["probe_rows"])
            log.info("epoch %d/%d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  (%.1fs)",
                     epoch, cfg.trainer.epochs, row["train_loss"], row["train_acc"], row["val_loss"],
                     row["val_acc"], row["epoch_seconds"])
            if cfg.trainer.checkpoint:
                progress_now = dict(progress, seconds_before=progress["seconds_before"]
                                    + time.perf_counter() - started)
                records.save_checkpoint(checkpoint_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(batch_gen), "progress": progress_now})

        for split in ("train", "val", "test"):
            loss, acc = evaluate(model, getattr(data, f"{split}_x"), getattr(data, f"{split}_y"))
            results[f"{split}_loss"], results[f"{split}_acc"] = loss, acc
        run_probes(cfg.probe, model, data, cfg.seed, out_dir, results)
        results["status"] = "completed"
    except Diverged as err:
        results["status"], results["error"] = "diverged", str(err)
    except (ConfigError, DataUnavailable) as err:
        results["status"], results["error"] = "failed", str(err)
    except Exception as err:  # noqa: BLE001 - any training error is a result to record, not a crash
        results["status"], results["error"] = "failed", f"{type(err).__name__}: {err}"
        results["traceback"] = traceback.format_exc()

    results["best_val_acc"] = progress["best_val_acc"] if progress["rows"] else None
    results["best_epoch"] = progress["best_epoch"] if progress["rows"] else None
    results["epochs_completed"] = len(progress["rows"])
    results["wall_seconds"] = progress["seconds_before"] + time.perf_counter() - started
    records.write_results(results_path, results)
    if results["status"] != "completed":
        log.error("run %s: %s", results["status"], results["error"])
    return results
