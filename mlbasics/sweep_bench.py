"""`python -m mlbasics.bench --sweep OVERRIDES`: one sweep trained as the basic launcher trains it and
as the packed launcher does, side by side on this machine, with wall time, peak memory and the ratio.

Each side runs in a fresh child process (so neither inherits the other's memory or caches) and does
what its launcher does for every job: `train.train` job after job, or `pack.train_pack` per pack.
The jobs' test accuracies are compared too: the packed numbers must be the separate runs' numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mlbasics.config import PROJECT_DIR, register


def sweep_overrides(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, as `-m` would expand them (an experiment's hydra.sweeper.params included)."""
    register()
    parser = OverridesParser.create()
    fixed = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_DIR / "conf")):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides([*params, *overrides])
    return BasicSweeper.split_arguments(parsed, None)[0]


def compose_jobs(jobs: list[list[str]]) -> list[Any]:
    register()
    configs = []
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_DIR / "conf")):
        for overrides in jobs:
            configs.append(compose("config", overrides=overrides))
    return configs


def run_side(side: str, jobs: list[list[str]], folder: str, max_pack: int, answer) -> None:
    """In a child process: train every job the way `side` launches them; send back timings and results."""
    import torch

    from mlbasics.pack import train_pack
    from mlbasics.pack_launcher import pack_threads, plan
    from mlbasics.train import train

    configs = compose_jobs(jobs)
    dirs = [Path(folder) / side / f"job{i}" for i in range(len(jobs))]
    start = time.perf_counter()
    results: dict[int, dict] = {}
    if side == "basic":
        for i, cfg in enumerate(configs):
            results[i] = train(cfg, dirs[i], jobs[i])
    else:
        tasks = [OmegaConf.to_container(c, resolve=True, enum_to_str=True) for c in configs]
        packs, alone = plan(tasks, max_pack)
        for n, pack in enumerate(packs):  # threads as pack_launcher.run_pack gives them
            torch.set_num_threads(pack_threads([tasks[i] for i in pack]))
            results.update(zip(pack, train_pack([(configs[i], dirs[i], jobs[i]) for i in pack], str(n))))
        for i in alone:
            results[i] = train(configs[i], dirs[i], jobs[i])
        answer["packs"] = [len(p) for p in packs]
    answer["seconds"] = time.perf_counter() - start
    answer["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    answer["results"] = [{k: results[i].get(k) for k in ("status", "test_acc", "val_acc")} for i in range(len(jobs))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.bench --sweep", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="the sweep, as after `python -m mlbasics.run -m`")
    parser.add_argument("--max-pack", type=int, default=16)
    args = parser.parse_args(argv)
    jobs = sweep_overrides(args.overrides)
    print(f"{len(jobs)} jobs: {' '.join(args.overrides)}", flush=True)
    context = multiprocessing.get_context("spawn")
    answers: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mlbasics-bench-") as folder, context.Manager() as manager:
        for side in ("basic", "packed"):
            answer = manager.dict()
            child = context.Process(target=run_side, args=(side, jobs, folder, args.max_pack, answer))
            child.start()
            child.join()
            if child.exitcode != 0 or "seconds" not in answer:
                sys.exit(f"mlbasics: the {side} side failed (exit {child.exitcode})")
            answers[side] = dict(answer)
            print(f"{side:<7} {answers[side]['seconds']:8.1f} s   peak memory {answers[side]['peak_rss_mb']:7.0f} MB"
                  + (f"   packs of {answers[side]['packs']}" if side == "packed" else ""), flush=True)
    basic, packed = answers["basic"], answers["packed"]
    print(f"packed is {basic['seconds'] / packed['seconds']:.2f}x faster than basic "
          f"(memory {packed['peak_rss_mb'] / basic['peak_rss_mb']:.2f}x)")
    pairs = list(zip(basic["results"], packed["results"]))
    same_status = sum(b["status"] == p["status"] for b, p in pairs)
    diffs = {i: abs(b["test_acc"] - p["test_acc"]) for i, (b, p) in enumerate(pairs)
             if b["test_acc"] is not None and p["test_acc"] is not None}
    print(f"outcomes equal in {same_status}/{len(pairs)} jobs; test accuracy differences over {len(diffs)} "
          f"completed jobs: median {statistics.median(diffs.values() or [0.0]) * 100:.2f} points, largest "
          f"{max(diffs.values(), default=0.0) * 100:.2f}")
    if diffs:
        worst = max(diffs, key=diffs.get)
        print(f"  largest in: {' '.join(jobs[worst])} (basic {pairs[worst][0]['test_acc']:.4f}, "
              f"packed {pairs[worst][1]['test_acc']:.4f})")


if __name__ == "__main__":
    main()
