"""checkpoint.pt: everything a stopped run needs to continue exactly where it left off.

Loaded with `weights_only=True`, so a file that carries anything but tensors and plain values
(a crafted pickle) is refused without running a line of it. A file that cannot be read is moved
aside, never deleted, and the run starts from scratch.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from mlbasics import records

log = logging.getLogger(__name__)
KEYS = ("model", "optimizer", "scheduler", "rng", "state", "fingerprint", "config")


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    # serialised in memory first: torch's own file writer turns a full disk into an obscure RuntimeError
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    records.write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint in `path`; None if there is none, or if it was unreadable (then moved aside)."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        missing = [key for key in KEYS if key not in checkpoint] if isinstance(checkpoint, dict) else list(KEYS)
        if missing:
            raise ValueError(f"not a checkpoint of this program (no {', '.join(missing)})")
    except Exception as err:  # noqa: BLE001 - random bytes make the unpickler fail in any way (IndexError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):
            reason = ("not a checkpoint this program wrote: it holds more than tensors and plain values, "
                      "and the weights-only loader ran none of it")
        quarantine = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(quarantine)
        log.warning("%s could not be used (%s); moved it to %s and training from the start",
                    path, reason[:200], quarantine.name)
        return None
    return checkpoint


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
