"""Training a pack: jobs that share every shape train as one stacked model, each still a job of its own.

`train_pack` mirrors `train.train` for K jobs at once and reuses its pieces: each member claims its
folder (skipping a completed job, resuming from its own checkpoint.pt), gets the weights its seed
gives, its own batch order, optimizer and schedule, and writes the same files a separate run
writes, plus `packed_with` in results.json. A member whose loss stops being finite is recorded
`diverged` at that step and frozen while the rest train on; an error in the shared step (BatchNorm
with batch size 1) ends every member still training as `failed` with its message.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm import tqdm

from mlbasics import records
from mlbasics.config import ConfigError
from mlbasics.data import Splits, batch_indices, flip_half, steps_per_epoch
from mlbasics.records import Status
from mlbasics.stacked import MemberRandomness, StackedMLP, StackedSGD
from mlbasics.train import (Diverged, FolderHoldsAnotherRun, Interrupted, Job, Loop, Outcome, check_and_place,
                            claim_folder, close_epoch, finish, init_model, load_data, make_loop, set_aside_refused)

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own for run.log


@dataclass
class Member:
    job: Job
    outcome: Outcome
    saved: dict[str, Any] | None
    log_file: logging.Handler
    loop: Loop | None = None
    active: bool = True

    @contextmanager
    def logging(self) -> Iterator[None]:
        """What is logged inside goes to this member's run.log too, and says whose it is (the members' lines
        interleave on the console)."""
        root = logging.getLogger()
        root.addHandler(self.log_file)
        name = NameTheJob(self.job.out_dir.name)
        for handler in root.handlers:
            handler.addFilter(name)
        try:
            yield
        finally:
            for handler in root.handlers:
                handler.removeFilter(name)
            root.removeHandler(self.log_file)

    def end(self, err: BaseException | None) -> None:
        """Record the member's outcome; a results.json that cannot be written is logged, the pack goes on."""
        self.active = False
        with self.logging():
            try:
                self.outcome.end(err)
            except records.OutputError as output_err:
                log.error("%s: %s (its results could not be recorded)", self.job.out_dir.name, output_err)


class NameTheJob(logging.Filter):
    def __init__(self, job: str) -> None:
        super().__init__()
        self.prefix = f"[{job}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.msg.startswith(self.prefix):
            record.msg = self.prefix + record.msg
        return True


def open_log(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def train_pack(jobs: Sequence[tuple[Any, Path, list[str]]], pack_id: str) -> list[dict[str, Any]]:
    """Run (or resume, or skip) each (cfg, folder, overrides) job; their results in the same order."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    members: dict[int, Member] = {}
    for i, (cfg, out_dir, overrides) in enumerate(jobs):
        job = Job.of(cfg, out_dir, overrides)
        job.out_dir.mkdir(parents=True, exist_ok=True)
        member_log = open_log(job.out_dir)
        try:
            earlier, saved = claim_folder(job)
            if isinstance(earlier, dict) and earlier.get("status") == Status.completed:
                log.info("%s already completed; nothing to do", job.out_dir.name)
                results[i] = earlier
            else:
                members[i] = Member(job, Outcome(job), saved, member_log)
                continue
        except FolderHoldsAnotherRun as refusal:
            results[i] = refused(job, refusal)
        except records.OutputError as err:  # its folder cannot be written: it cannot train, the others can
            log.error("%s: %s", job.out_dir.name, err)
            results[i] = {"status": Status.failed.value, "error": str(err)}
        member_log.close()
    try:
        # members resumed from different epochs train in separate stacks, each with one step sequence
        by_start: dict[int, list[int]] = {}
        for i, member in members.items():
            by_start.setdefault(len(member.saved["state"]["rows"]) if member.saved else 0, []).append(i)
        for start, indices in sorted(by_start.items()):
            train_stack([members[i] for i in indices], pack_id if len(by_start) == 1 else f"{pack_id}.{start}")
    finally:
        for member in members.values():
            member.log_file.close()
    for i, member in members.items():
        results[i] = member.outcome.results
    return results


def refused(job: Job, refusal: FolderHoldsAnotherRun) -> dict[str, Any]:
    """As in a basic sweep: the other config's files set aside, this job recorded as failed."""
    try:
        return set_aside_refused(job, refusal)
    except records.OutputError as err:
        log.error("%s: %s (its refusal could not be recorded)", job.out_dir.name, err)
        return {"status": Status.failed.value, "error": refusal.what}


def train_stack(members: list[Member], pack_id: str) -> None:
    """Set the members up as one stacked model and train them to the end (or to their own ends)."""
    for member in members:
        member.outcome.results["packed_with"] = {"size": len(members), "id": pack_id}
        with member.logging():
            log.info("packed with %d jobs (pack %s)", len(members), pack_id)
    data = place_members(members)
    if data is None:
        return
    try:
        stack, sgd, rng = stack_members(members, data)
        cfg = members[0].job.cfg
        for epoch in range(members[0].outcome.state.epochs_done + 1, cfg.trainer.epochs + 1):
            epoch_start = time.perf_counter()
            rows = fit_stack_epoch(stack, sgd, members, epoch)
            for k, member in enumerate(members):
                if member.active:
                    with rng.of(k), member.logging():  # the checkpoint holds the member's own generator state
                        on_member(member, close_epoch, member.job, member.loop, member.outcome, epoch, rows[k], [],
                                  epoch_start)
            if not any(m.active for m in members):
                return
        for member in members:
            if member.active:
                with member.logging():
                    on_member(member, finish, member.job, member.loop, member.outcome.results)
                if member.active:
                    member.end(None)
    except KeyboardInterrupt:
        stopped = [m for m in members if m.active]
        raise Interrupted(min((m.outcome.state.epochs_done for m in stopped), default=0),
                          min((m.outcome.epochs_saved for m in stopped), default=0),
                          all(m.job.cfg.trainer.checkpoint for m in stopped)) from None
    except Exception as err:  # noqa: BLE001 - the shared step failed: every member still training ends with it
        for member in members:
            if member.active:
                member.end(err)


def on_member(member: Member, work, *args) -> None:
    """Work that concerns one member (its files, its probes): a failure ends that member only."""
    try:
        work(*args)
    except Exception as err:  # noqa: BLE001 - recorded in its results.json like a separate run's
        member.end(err)


def place_members(members: list[Member]) -> Splits | None:
    """Each member's config checked (a bad one fails alone) and the pack's data loaded once."""
    device = None
    for member in members:
        try:
            device = check_and_place(member.job, member.outcome)
        except ConfigError as err:
            member.end(err)
    live = [m for m in members if m.active]
    if not live:
        return None
    try:
        return load_data(live[0].job, device)
    except Exception as err:  # noqa: BLE001 - missing data fails every member, with the same message
        for member in live:
            member.end(err)
        return None


def stack_members(members: list[Member], data: Splits) -> tuple[StackedMLP, StackedSGD, MemberRandomness]:
    """Each member's model initialised by its own seed, stacked, then its optimizer and saved state."""
    rng = MemberRandomness(data.train_x.device)
    models = []
    for member in members:
        models.append(init_model(member.job, member.outcome, data))
        rng.capture()
    stack = StackedMLP(models, rng)
    for k, member in enumerate(members):
        with rng.of(k), member.logging():
            member.loop = make_loop(member.job, member.outcome, models[k], data, member.saved)
            member.saved = None  # loaded; not kept in memory for the whole run
    return stack, StackedSGD(stack, [m.loop.optimizer for m in members]), rng


def fit_stack_epoch(stack: StackedMLP, sgd: StackedSGD, members: list[Member], epoch: int) -> list[dict[str, float]]:
    """One pass of every member over the training split, as train.fit_epoch makes it for one."""
    loops = [m.loop for m in members]
    data, batch_size = loops[0].data, loops[0].batch_size
    device = data.train_x.device
    n, n_steps = len(data.train_y), steps_per_epoch(len(data.train_y), batch_size)
    stack.train()
    orders = [batch_indices(n, batch_size, loop.batch_gen, device) for loop in loops]
    loss_sums = [0.0] * len(members)
    correct = torch.zeros(len(members), dtype=torch.long, device=device)
    grad_norm_sum = torch.zeros(len(members), len(stack.layers), device=device)
    for _ in tqdm(range(n_steps), desc=f"epoch {epoch} (pack of {len(members)})", leave=False,
                  disable=not sys.stderr.isatty()):
        idx = torch.stack([next(order) for order in orders])
        x = data.train_x.index_select(0, idx.flatten()).view(*idx.shape, -1)
        y = data.train_y.index_select(0, idx.flatten()).view(idx.shape)
        if loops[0].hflip:
            x = torch.stack([flip_half(part, data.image_shape, loop.batch_gen) for part, loop in zip(x, loops)])
        logits = stack(x)
        losses = [torch.nn.functional.cross_entropy(member_logits, member_y, label_smoothing=loop.label_smoothing)
                  for member_logits, member_y, loop in zip(logits.unbind(0), y.unbind(0), loops)]
        values = torch.stack(losses).tolist()  # the one sync per step, as in a separate run
        for k, (member, value) in enumerate(zip(members, values)):
            limit = member.loop.diverge_loss
            if member.active and (not math.isfinite(value) or (limit is not None and value > limit)):
                member.end(Diverged(f"training loss is {value} at epoch {epoch}"))
        live = [k for k, m in enumerate(members) if m.active]
        if not live:
            break
        stack.zero_grad()
        sum(losses[k] for k in live).backward()  # members are independent: each gets its own loss's gradient
        grad_norm_sum += stack.weight_grad_norms()
        sgd.step(live)
        for k in live:
            loops[k].scheduler.step()
            loss_sums[k] += values[k] * len(idx[k])
        correct += (logits.argmax(2) == y).sum(1)
    correct_counts, grad_means = correct.tolist(), (grad_norm_sum / n_steps).tolist()
    return [{"train_loss": loss_sums[k] / n, "train_acc": correct_counts[k] / n,
             **{f"grad_norm_fc{i + 1}": g for i, g in enumerate(grad_means[k])}} for k in range(len(members))]

