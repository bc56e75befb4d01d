"""One training run, top to bottom: claim the folder, set up, fit epoch by epoch, finish.

`train(cfg, out_dir)` reads as the run's life cycle. How the run ends is recorded by `Outcome`:
a non-finite loss ends it as `diverged`, an exception as `failed` with its message, and both go
to results.json like a completed run, so a sweep can tabulate every outcome. A folder is only
ever continued by the config that started it (`claim_folder`); Ctrl-C stops with the last
finished epoch safe in checkpoint.pt.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from mlbasics import checkpoint, optimizer as optim, probes, records
from mlbasics.board import Board
from mlbasics.config import ConfigError, Device, validate
from mlbasics.data import Splits, batch_indices, flip_half, load_splits, steps_per_epoch
from mlbasics.datafiles import DataUnavailable
from mlbasics.model import build_mlp, count_parameters, linear_layers
from mlbasics.records import Status

log = logging.getLogger(__name__)
SYMMETRY_SAMPLE = 10_000  # training images on which the symmetry probe measures the loss
EVAL_BATCH = 8192  # evaluation needs no gradients, so large batches only save Python overhead


class Diverged(RuntimeError):
    """The training loss became inf or nan (or passed trainer.diverge_loss)."""


class Interrupted(Exception):
    """Ctrl-C: the run stopped after `epochs_done` epochs, of which checkpoint.pt holds `epochs_saved`
    (one fewer when the key came between an epoch's metrics and its checkpoint)."""

    def __init__(self, epochs_done: int, epochs_saved: int, checkpointing: bool) -> None:
        super().__init__(epochs_done, epochs_saved, checkpointing)
        self.epochs_done, self.epochs_saved, self.checkpointing = epochs_done, epochs_saved, checkpointing


class FolderHoldsAnotherRun(ConfigError):
    """The folder's results or checkpoint were made by a different config; `earlier` is their record."""

    def __init__(self, folder: Path, changes: list[str], earlier: dict[str, Any]) -> None:
        self.what = f"{folder} holds a run of another config ({'; '.join(changes)})"
        super().__init__(f"{self.what}; nothing there was changed. Use another folder, or add "
                         f"trainer.start_over=true to move its files aside and train this config there")
        self.earlier = earlier


@dataclass
class RunState:
    """What the run has done so far; saved in every checkpoint, so a resumed run carries on with it."""
    rows: list[dict[str, float]] = field(default_factory=list)        # metrics.csv, one per epoch
    probe_rows: list[dict[str, float]] = field(default_factory=list)  # landscape.csv, one per probed step
    best_val_acc: float = -1.0
    best_epoch: int = 0
    seconds_before: float = 0.0  # wall time of earlier attempts in this folder

    @property
    def epochs_done(self) -> int:
        return len(self.rows)


@dataclass
class Loop:
    """What one epoch of training needs: the model, its optimizer and schedule, data and batching."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: Splits
    batch_size: int
    batch_gen: torch.Generator
    hflip: bool = False
    label_smoothing: float = 0.0
    diverge_loss: float | None = None
    step_probes: probes.StepProbes | None = None
    board: Board | None = None  # TensorBoard curves (trainer.tensorboard)


@dataclass
class Job:
    """The job as this invocation asks for it: its config, folder and fingerprint."""
    cfg: Any
    out_dir: Path
    overrides: list[str]
    config: dict[str, Any]     # the whole config, resolved (written back into .hydra/ if a run is refused)
    fingerprint: str
    relevant: dict[str, Any]   # the training-relevant keys the fingerprint is taken over

    @classmethod
    def of(cls, cfg, out_dir: Path, overrides: Sequence[str]) -> "Job":
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        digest, relevant = records.fingerprint(config)
        return cls(cfg, Path(out_dir), list(overrides), config, digest, relevant)


def train(cfg, out_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume, or skip if already completed) the job whose folder is `out_dir`."""
    job = Job.of(cfg, out_dir, overrides)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    earlier_results, saved = claim_folder(job)
    if earlier_results and earlier_results.get("status") == Status.completed:
        log.info("already completed in %s; nothing to do", job.out_dir)
        return earlier_results
    with Outcome(job) as outcome:
        loop = setup(job, outcome, saved)
        for epoch in range(outcome.state.epochs_done + 1, cfg.trainer.epochs + 1):
            fit_and_save(job, loop, outcome, epoch)
        finish(job, loop, outcome.results)
    return outcome.results


def claim_folder(job: Job) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(earlier results, checkpoint) of this folder, if they were made by this config.

    Leftover temporary files of a killed write are removed; an unreadable checkpoint is moved
    aside; `trainer.start_over=true` moves every earlier run file aside. Earlier files of another
    config raise FolderHoldsAnotherRun, naming each key that differs.
    """
    for path in records.remove_stale_temp_files(job.out_dir):
        log.info("removed %s, left by a write that was interrupted", path.name)
    if job.cfg.trainer.start_over:
        moved = records.move_aside(job.out_dir)
        if moved:
            log.info("trainer.start_over: moved the earlier run's files to %s", moved)
        return None, None
    results = records.read_results(job.out_dir / records.RESULTS_FILE)
    if results and results.get("status") == Status.completed and results.get("fingerprint") == job.fingerprint:
        return results, None  # done: its checkpoint is not needed (and not read)
    saved = checkpoint.load(job.out_dir / records.CHECKPOINT_FILE)
    for earlier in (saved, results):
        if earlier is not None and earlier.get("fingerprint") != job.fingerprint:
            if isinstance(earlier.get("config"), dict):
                changes = records.config_differences(records.fingerprint(earlier["config"])[1], job.relevant)
            else:
                changes = ["it records no config (made by an older version of mlbasics)"]
            raise FolderHoldsAnotherRun(job.out_dir, changes, earlier)
    return results, saved


def set_aside_refused(job: Job, refusal: FolderHoldsAnotherRun) -> dict[str, Any]:
    """In a sweep: move the other config's files aside (with its config) and record this job as failed."""
    moved = records.move_aside(job.out_dir)
    earlier = refusal.earlier
    if moved is not None and isinstance(earlier.get("config"), dict):
        records.write_hydra_record(moved, earlier["config"], earlier.get("overrides", []))
    error = refusal.what + (f"; its files are now in {moved.name}/. Run the sweep again to train this config "
                            f"here" if moved else "")
    results = {"status": Status.failed.value, "error": error, "seed": job.cfg.seed, "overrides": job.overrides,
               "fingerprint": job.fingerprint, "config": job.config}
    records.write_results(job.out_dir / records.RESULTS_FILE, results)
    return results


class Outcome:
    """Records how the run inside `with Outcome(job)` ended, in results.json (see the module docstring)."""

    def __init__(self, job: Job) -> None:
        self.job, self.started, self.state = job, time.perf_counter(), RunState()
        self.epochs_saved = 0  # epochs that checkpoint.pt holds
        self.results: dict[str, Any] = {
            "status": "running", "error": None,
            **{f"{split}_{metric}": None for split in ("train", "val", "test") for metric in ("acc", "loss")},
            "seed": job.cfg.seed, "device": None, "n_params": None, **records.slurm_identity(),
            "overrides": job.overrides, "git_commit": records.git_commit(), "versions": records.versions(),
            "fingerprint": job.fingerprint, "config": job.config,
        }

    def __enter__(self) -> "Outcome":
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if kind is KeyboardInterrupt:  # no results.json: the folder stays resumable, the report says incomplete
            raise Interrupted(self.state.epochs_done, self.epochs_saved, bool(self.job.cfg.trainer.checkpoint)) from None
        if kind is not None and not issubclass(kind, Exception):
            return False
        self.end(err)
        return True

    def end(self, err: BaseException | None) -> None:
        """Record the run as completed (err None), diverged or failed; inside `except`, with its traceback."""
        status, error = Status.completed, None
        if isinstance(err, Diverged):
            status, error = Status.diverged, str(err)
        elif isinstance(err, (ConfigError, DataUnavailable, records.OutputError)):
            status, error = Status.failed, str(err)
        elif err is not None:
            status, error = Status.failed, f"{type(err).__name__}: {err}"
            self.results["traceback"] = traceback.format_exc()
        state = self.state
        self.results.update(status=status.value, error=error,
                            best_val_acc=state.best_val_acc if state.rows else None,
                            best_epoch=state.best_epoch if state.rows else None,
                            epochs_completed=state.epochs_done,
                            wall_seconds=self.seconds_so_far())
        records.write_results(self.job.out_dir / records.RESULTS_FILE, self.results)  # may raise OutputError

    def seconds_so_far(self) -> float:
        return self.state.seconds_before + time.perf_counter() - self.started


def setup(job: Job, outcome: Outcome, saved: dict[str, Any] | None) -> Loop:
    """Data, model, optimizer and schedule on the run's device; continued from `saved` if given."""
    if job.cfg.trainer.threads:
        torch.set_num_threads(job.cfg.trainer.threads)
    device = check_and_place(job, outcome)
    data = load_data(job, device)
    model = init_model(job, outcome, data)
    return make_loop(job, outcome, model, data, saved)


def check_and_place(job: Job, outcome: Outcome) -> torch.device:
    validate(job.cfg)  # a single run checked this before Hydra's output; a sweep's job records it as failed
    device = resolve_device(job.cfg.device)
    outcome.results.update(device=str(device), threads=torch.get_num_threads())
    return device


def load_data(job: Job, device: torch.device) -> Splits:
    data = load_splits(job.cfg.dataset, device)
    if job.cfg.dataset.hflip and data.image_shape is None:
        raise ConfigError("dataset.hflip=true is not allowed here: the synthetic set has no images to mirror")
    return data


def init_model(job: Job, outcome: Outcome, data: Splits) -> nn.Sequential:
    """The model as the run's seed initialises it (a packed member gets the very same weights)."""
    torch.manual_seed(job.cfg.seed)
    model = build_mlp(job.cfg.model, data.n_features, data.n_classes).to(data.train_x.device)
    outcome.results["n_params"] = count_parameters(model)
    return model


def make_loop(job: Job, outcome: Outcome, model: nn.Module, data: Splits, saved: dict[str, Any] | None) -> Loop:
    """Optimizer and schedule over `model`'s parameters, and the batch order; continued from `saved` if given."""
    cfg, results = job.cfg, outcome.results
    lr, derived = optim.peak_lr(cfg.optimizer, data.train_x)
    results.update(derived, lr_effective=lr)
    total_steps = cfg.trainer.epochs * steps_per_epoch(len(data.train_y), cfg.trainer.batch_size)
    optimizer, scheduler = optim.build(cfg.optimizer, model, lr, total_steps)
    results["optimizer_used"] = optim.describe(optimizer, scheduler)
    step_probes = probes.StepProbes(cfg.probe, cfg.trainer.label_smoothing)
    loop = Loop(model, optimizer, scheduler, data, cfg.trainer.batch_size, torch.Generator().manual_seed(cfg.seed),
                hflip=cfg.dataset.hflip, label_smoothing=cfg.trainer.label_smoothing,
                diverge_loss=cfg.trainer.diverge_loss, step_probes=step_probes if step_probes.active else None,
                board=Board(job.out_dir) if cfg.trainer.tensorboard else None)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        checkpoint.set_rng_state(saved["rng"], loop.batch_gen)
        outcome.state = RunState(**saved["state"])
        outcome.epochs_saved = outcome.state.epochs_done
        log.info("resuming from %s after epoch %d", job.out_dir / records.CHECKPOINT_FILE, outcome.state.epochs_done)
    return loop


def fit_and_save(job: Job, loop: Loop, outcome: Outcome, epoch: int) -> None:
    """One epoch, its validation, its row in metrics.csv and its checkpoint."""
    epoch_start = time.perf_counter()
    running, probe_rows = fit_epoch(loop, epoch)
    close_epoch(job, loop, outcome, epoch, running, probe_rows, epoch_start)


def close_epoch(job: Job, loop: Loop, outcome: Outcome, epoch: int, running: dict[str, float],
                probe_rows: list[dict[str, float]], epoch_start: float) -> None:
    """After an epoch's training: validation, its row in metrics.csv, the log line and the checkpoint."""
    cfg, state, out_dir = job.cfg, outcome.state, job.out_dir
    val_loss, val_acc = evaluate(loop.model, loop.data.val_x, loop.data.val_y)
    row = {"epoch": epoch, "train_loss": running.pop("train_loss"), "train_acc": running.pop("train_acc"),
           "val_loss": val_loss, "val_acc": val_acc, "lr": loop.optimizer.param_groups[0]["lr"],
           "epoch_seconds": time.perf_counter() - epoch_start, **running}
    state.rows.append(row)
    state.probe_rows.extend(probe_rows)
    if val_acc > state.best_val_acc:
        state.best_val_acc, state.best_epoch = val_acc, epoch
    records.write_metrics(out_dir / records.METRICS_FILE, state.rows)
    if loop.board is not None:
        loop.board.epoch(row)
    if state.probe_rows:
        records.write_metrics(out_dir / records.LANDSCAPE_FILE, state.probe_rows)
    log.info("epoch %d/%d  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  (%.1fs)",
             epoch, cfg.trainer.epochs, row["train_loss"], row["train_acc"], val_loss, val_acc, row["epoch_seconds"])
    if cfg.trainer.checkpoint:
        saved_state = dataclasses.replace(state, seconds_before=outcome.seconds_so_far())
        checkpoint.save(out_dir / records.CHECKPOINT_FILE, {
            # copies: a packed member's tensors are views into the pack's, and torch.save would write all of it
            "model": own_copies(loop.model.state_dict()), "optimizer": own_copies(loop.optimizer.state_dict()),
            "scheduler": loop.scheduler.state_dict(), "rng": checkpoint.rng_state(loop.batch_gen),
            "state": dataclasses.asdict(saved_state), "fingerprint": job.fingerprint, "config": job.config,
            "overrides": job.overrides})
        outcome.epochs_saved = epoch


def own_copies(tree: Any) -> Any:
    """`tree` with every tensor in it cloned (dicts and lists rebuilt, anything else as it is)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {key: own_copies(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [own_copies(value) for value in tree]
    return tree


def fit_epoch(loop: Loop, epoch: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """One pass over the training split: (running loss and accuracy with mean grad norms, probe rows).

    Steps are numbered across epochs; where a step probe is due, its row is taken after
    backward and before the optimizer step, without changing anything.
    """
    model, data = loop.model, loop.data
    model.train()
    linears = linear_layers(model)
    device = data.train_x.device
    loss_sum, correct = 0.0, torch.zeros((), dtype=torch.long, device=device)
    grad_norm_sum = torch.zeros(len(linears), device=device)
    n, n_steps = len(data.train_y), steps_per_epoch(len(data.train_y), loop.batch_size)
    probe_rows = []
    bar = tqdm(batch_indices(n, loop.batch_size, loop.batch_gen, device), total=n_steps,
               desc=f"epoch {epoch}", leave=False, disable=not sys.stderr.isatty())
    for step, idx in enumerate(bar, start=(epoch - 1) * n_steps):
        x, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
        if loop.hflip:
            x = flip_half(x, data.image_shape, loop.batch_gen)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=loop.label_smoothing)
        loss_value = loss.item()  # the one sync per step: a diverging run stops at its first bad step
        if not math.isfinite(loss_value) or (loop.diverge_loss is not None and loss_value > loop.diverge_loss):
            raise Diverged(f"training loss is {loss_value} at epoch {epoch}")
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm_sum += torch.stack([torch.linalg.vector_norm(layer.weight.grad) for layer in linears])
        if loop.step_probes is not None and loop.step_probes.due(step):
            lr = loop.optimizer.param_groups[0]["lr"]
            probe_rows.append(loop.step_probes.measure(model, x, y, lr, step, epoch))
        loop.optimizer.step()
        loop.scheduler.step()
        loss_sum += loss_value * len(y)
        correct += (logits.argmax(1) == y).sum()
    row = {"train_loss": loss_sum / n, "train_acc": correct.item() / n}
    row.update({f"grad_norm_fc{i + 1}": g for i, g in enumerate((grad_norm_sum / n_steps).tolist())})
    return row, probe_rows


def finish(job: Job, loop: Loop, results: dict[str, Any]) -> None:
    """Final loss and accuracy on every split (eval mode), then the end-of-training probes."""
    data, cfg = loop.data, job.cfg
    for split in ("train", "val", "test"):
        loss, acc = evaluate(loop.model, getattr(data, f"{split}_x"), getattr(data, f"{split}_y"))
        results[f"{split}_loss"], results[f"{split}_acc"] = loss, acc
    if cfg.probe.collapse:
        results.update(probes.collapse(loop.model, data.test_x))
    if cfg.probe.symmetry:
        sample_x, sample_y = data.train_x[:SYMMETRY_SAMPLE], data.train_y[:SYMMETRY_SAMPLE]
        summary, curve = probes.symmetry(loop.model, sample_x, sample_y, seed=cfg.seed)
        results.update(summary)
        records.write_metrics(job.out_dir / records.SYMMETRY_FILE, curve)
    if loop.board is not None:
        loop.board.finish(job.config, results)


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
