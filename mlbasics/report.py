"""`python -m mlbasics.report DIR [DIR ...]`: sweep folders -> pandas tables, Markdown and plots.

Reads only the files runs leave (.hydra/, results.json, metrics.csv, landscape.csv), so it
knows nothing of torch and works on a sweep that is still running, was interrupted, or was
copied from a cluster: a job without a readable results.json is a row with status
`incomplete`. Its output depends only on those files, so running it again gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
import yaml

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from mlbasics import plots, records
from mlbasics.records import Status

STATUSES = [status.value for status in Status]
FINAL_METRICS = ["test_acc", "val_acc", "train_acc", "test_loss", "val_loss", "train_loss", "best_val_acc",
                 "best_epoch", "epochs_completed", "wall_seconds"]
RESULT_COLUMNS = ["status", "error", *FINAL_METRICS, "n_params", "device", "slurm_job_id"]
# results.json keys that are not measurements of the job's outcome
NOT_METRICS = {"seed", "overrides", "git_commit", "versions", "traceback", "n_params", "device", "status", "error",
               "slurm_restarts"}
MEASURED_PREFIXES = ("collapse_", "symmetry_", "first_epoch_", "grad_ratio_", "landscape_", "ics_")
MEASURED_KEYS = {"smoothness_L", "lr_effective", "train_loss_increases"}
STD_NOTE = "\nmean ± std over the completed jobs of each group; std is the sample standard deviation (ddof 1).\n"
VAL_ACC_TARGET = 0.80  # "first epoch reaching 80 % validation accuracy" (exercise 6.3 b)


def find_jobs(folder: Path) -> list[Path]:
    """Every job folder under `folder` (itself included): those where Hydra recorded the overrides."""
    return sorted(p.parent.parent for p in folder.rglob(".hydra/overrides.yaml"))


def flatten(tree: dict) -> dict[str, object]:
    """{"model": {"hidden": [1, 2]}} -> {"model.hidden": "[1,2]"}: lists as compact text, like overrides."""
    return {key: json.dumps(value, separators=(",", ":"), default=str) if isinstance(value, list) else value
            for key, value in records.flatten(tree).items()}


class Malformed(ValueError):
    """A job's file that exists but cannot be what it claims; the message names the file."""


def display_name(path: Path) -> str:
    """The folder name as text: bytes that are not UTF-8 (a name made elsewhere) become \\x escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def read_yaml(path: Path, kind: type):
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise Malformed(f"unreadable {path.name}: {' '.join(str(err).split())[:200]}") from None
    value = kind() if value is None else value
    if not isinstance(value, kind):
        raise Malformed(f"unreadable {path.name}: holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def read_config(job: Path) -> dict:
    """The job's .hydra/config.yaml ({} where Hydra wrote none)."""
    path = job / ".hydra" / "config.yaml"
    return read_yaml(path, dict) if path.exists() else {}


def read_overrides(job: Path) -> dict[str, object]:
    """The job's command-line overrides, parsed by Hydra's own parser; `~key` (a deletion) maps to None."""
    typed = read_yaml(job / ".hydra" / "overrides.yaml", list)
    try:
        parsed = OverridesParser.create().parse_overrides([str(item) for item in typed])
    except OverrideParseException as err:
        raise Malformed(f"unreadable overrides.yaml: {' '.join(str(err).split())[:200]}") from None
    return {o.key_or_group: None if o.is_delete() else o.value() if isinstance(o.value(), str)
            else o.get_value_element_as_str() for o in parsed}


def read_results(job: Path) -> dict[str, object]:
    """results.json, checked: an object whose status is known and whose metrics are numbers."""
    path = job / records.RESULTS_FILE
    if not path.exists():
        return {"status": Status.incomplete.value, "error": "no results.json (still running or interrupted)"}
    results = records.read_results(path)
    if results is None:
        raise Malformed("unreadable results.json: not a JSON object")
    if results.get("status") not in STATUSES:
        raise Malformed(f"unreadable results.json: unknown status {results.get('status')!r}")
    for key in FINAL_METRICS:
        value = results.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Malformed(f"unreadable results.json: {key} is {value!r}, not a number")
    return results


def read_job(job: Path, root: Path) -> dict[str, object]:
    """One row: the job's config, overrides, outcome and numbers read off its files. Whatever is readable
    is kept; a malformed file makes the row `incomplete`, with the reason in `error`."""
    problems: list[str] = []

    def attempt(read, empty):
        try:
            return read()
        except Malformed as err:
            problems.append(str(err))
            return empty

    config = attempt(lambda: read_config(job), {})
    overrides = attempt(lambda: read_overrides(job), {})
    results = attempt(lambda: read_results(job), {})
    features = attempt(lambda: {**curve_features(job / records.METRICS_FILE),
                                **landscape_features(job / records.LANDSCAPE_FILE)}, {})
    row: dict[str, object] = {"job": display_name(job.relative_to(root)) if job != root else ".", "_path": job}
    row.update(flatten(config))
    row.update({key: value for key, value in overrides.items() if key not in row})
    row.update({column: results.get(column) for column in RESULT_COLUMNS})
    # probe results (collapse_*, symmetry_*, smoothness_L, ...) become columns of their own
    row.update({key: value for key, value in results.items() if key not in NOT_METRICS and key not in row
                and isinstance(value, (int, float)) and not isinstance(value, bool)})
    row.update(features)
    if problems:
        row.update(status=Status.incomplete.value, error="; ".join(problems))
    row["_overrides"] = sorted(overrides)
    return row


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame | None:
    """A numeric CSV a run wrote, or None if there is none; Malformed if it is not one."""
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise Malformed(f"unreadable {path.name}: {' '.join(str(err).split())[:200]}") from None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise Malformed(f"unreadable {path.name}: no column {', '.join(missing)}")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    if (numeric.isna() & frame.notna()).any().any():
        raise Malformed(f"unreadable {path.name}: holds values that are not numbers")
    return numeric


def curve_features(path: Path) -> dict[str, float]:
    """Numbers read off a job's epochs: when it first reached the target val accuracy, and how the
    first layer's gradient norm compares with the output layer's in epoch 1 (vanishing gradients)."""
    epochs = read_table(path, ("epoch", "train_loss", "val_acc"))
    if epochs is None:
        return {}
    features: dict[str, float] = {}
    reached = epochs.loc[epochs["val_acc"] >= VAL_ACC_TARGET, "epoch"]
    features[f"first_epoch_val_acc_{VAL_ACC_TARGET:.2f}"] = float(reached.iloc[0]) if len(reached) else float("nan")
    # gradient descent with a step below 2/L never raises the loss of an L-smooth function
    features["train_loss_increases"] = float((epochs["train_loss"].diff() > 0).sum())
    grads = [c for c in epochs.columns if c.startswith("grad_norm_fc")]
    if len(grads) >= 2 and len(epochs):
        first, last = epochs[grads[0]].iloc[0], epochs[grads[-1]].iloc[0]
        features["grad_ratio_first_last_epoch1"] = float(first / last) if last else float("nan")
    return features


def landscape_features(path: Path) -> dict[str, float]:
    """Santurkar et al.'s numbers per job: loss-variation range, gradient predictiveness and beta_eff
    averaged over the probes of the first and of the last epoch, and the mean ICS per layer."""
    probes = read_table(path, ("step", "epoch"))
    if probes is None:
        return {}
    features: dict[str, float] = {}
    if "loss_max" in probes:
        land = probes.dropna(subset=["loss_max"])
        for which, epoch in (("first", land["epoch"].min()), ("last", land["epoch"].max())):
            part = land[land["epoch"] == epoch]
            features[f"landscape_loss_range_{which}"] = float((part["loss_max"] - part["loss_min"]).mean())
            features[f"landscape_gradpred_{which}"] = float(part["gradpred_max"].mean())
            features[f"landscape_beta_eff_{which}"] = float(part["beta_eff"].mean())
    for column in (c for c in probes.columns if c.startswith("ics_")):
        features[column] = float(probes[column].mean())
    return features


def summarise(rows: list[dict[str, object]], by: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The one-row-per-job table and the keys to group by (default: swept keys that vary, except seed)."""
    table = pd.DataFrame(rows)
    override_keys = sorted({key for row in rows for key in row["_overrides"]})
    table = table.drop(columns="_overrides")
    if by is None:
        by = [k for k in override_keys if k != "seed" and table[k].astype(str).nunique(dropna=False) > 1]
    missing = [k for k in by if k not in table.columns]
    if missing:
        raise KeyError(f"--by {', '.join(missing)}: not a key of these jobs (swept keys: {', '.join(override_keys)})")
    swept = [k for k in override_keys if k in table.columns]
    leading = ["job", *swept, *RESULT_COLUMNS]
    rest = sorted(c for c in table.columns if c not in leading)
    order = [*by, *[k for k in swept if k not in by], "job"]  # the grouping keys first, each by value
    table = table[leading + rest].sort_values(order, key=natural_order, kind="stable").reset_index(drop=True)
    return table, by


def group(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """n and outcome counts per group, then mean and std of each final metric over completed jobs."""
    keyed = table.assign(**{k: table[k].astype(str) for k in by}) if by else table.assign(all="all")
    keys = by or ["all"]
    counts = keyed.groupby(keys, sort=True, dropna=False).agg(n=("job", "size"))
    outcomes = pd.crosstab([keyed[k] for k in keys], pd.Categorical(keyed["status"], categories=STATUSES),
                           dropna=False)
    counts = counts.join(outcomes.reindex(columns=STATUSES, fill_value=0)).fillna(0).astype(int)
    done = keyed[keyed["status"] == Status.completed.value]
    extra = [c for c in table.columns if c not in FINAL_METRICS and c not in RESULT_COLUMNS and c != "job"
             and (c.startswith(MEASURED_PREFIXES) or c in MEASURED_KEYS)]
    metrics = [m for m in FINAL_METRICS if m in done.columns] + sorted(extra)
    numbers = done[keys].join(done[metrics].apply(pd.to_numeric, errors="coerce"))
    # std is the sample standard deviation (ddof 1): one job alone has none
    if len(done):
        stats = numbers.groupby(keys, sort=True)[metrics].agg(["mean", "std"])
        stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    else:  # no completed job: counts alone
        stats = pd.DataFrame(index=counts.index)
    grouped = counts.join(stats).reset_index()
    return grouped.sort_values(keys, key=natural_order, kind="stable").reset_index(drop=True)


def natural_order(column: pd.Series) -> pd.Series:
    """A sort key: numbers by value (2 before 16), lists by length then values ([128,128] before
    [128,128,128,128,128]), anything else as text; missing values last."""
    present = column.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and numbers.notna().all():
        return pd.to_numeric(column, errors="coerce")
    lists = present.map(_as_list)
    if len(present) and lists.notna().all():
        return column.map(lambda text: (0, len(_as_list(text)), *_as_list(text)) if pd.notna(text) else (1,))
    return column.astype(str)


def _as_list(text: object) -> list[float] | None:
    """`[128,128]` -> [128.0, 128.0]; None if the text is not a list of numbers."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    return None


def to_markdown(grouped: pd.DataFrame, by: list[str], metrics: list[str]) -> str:
    """A pipe table ready to paste: counts, then `mean ± std` of the chosen metrics."""
    keys = by or ["all"]
    header = [*keys, "n", *STATUSES, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in grouped.iterrows():
        cells = [str(row[k]) for k in keys] + [str(int(row[c])) for c in ["n", *STATUSES]]
        for metric in metrics:
            mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
            if pd.isna(mean):
                cells.append("–")
            else:
                cells.append(f"{mean:.4f} ± {std:.4f}" if not pd.isna(std) else f"{mean:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_curves(table: pd.DataFrame, filename: str = records.METRICS_FILE) -> pd.DataFrame:
    """Every job's per-epoch (or per-step) file in long form: job, <index column>, metric, value."""
    frames = []
    for job, path in zip(table["job"], table["_path"]):
        try:
            frame = read_table(path / filename, ())
        except Malformed:
            continue  # the job's row already says so
        if frame is None or not len(frame.columns):
            continue
        index = frame.columns[0]  # epoch for metrics.csv, step for landscape.csv
        long = frame.melt(id_vars=[index], var_name="metric", value_name="value")
        frames.append(long.assign(job=job)[["job", index, "metric", "value"]])
    if not frames:
        return pd.DataFrame(columns=["job", "epoch", "metric", "value"])
    curves = pd.concat(frames, ignore_index=True)
    return curves.assign(value=pd.to_numeric(curves["value"], errors="coerce"))  # an empty frame melts to text


def leading_columns(table: pd.DataFrame, grouped: pd.DataFrame, asked: list[str] | None) -> list[str]:
    """The columns asked for (KeyError for one the table lacks), else those the jobs' config names."""
    if asked is not None:
        unknown = [c for c in asked if f"{c}_mean" not in grouped.columns]
        if unknown:
            known = sorted(c[:-5] for c in grouped.columns if c.endswith("_mean"))
            raise KeyError(f"--columns {', '.join(unknown)}: not a result of these jobs ({', '.join(known)})")
        return asked
    named = table["report.columns"].dropna() if "report.columns" in table else pd.Series(dtype=object)
    configured = json.loads(named.iloc[0]) if len(named) else []
    return [c for c in configured if f"{c}_mean" in grouped.columns]  # a column no job produced: left out


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    records.write_text(path, frame.to_csv(index=False))


def report(folders: list[Path], out: Path, by: list[str] | None = None, metric: str = "test_acc",
           echo: bool = True, columns: list[str] | None = None) -> pd.DataFrame:
    """Write summary.csv, summary_grouped.csv, summary.md, curves.csv and plots into `out`.

    The printed table and summary.md lead with `columns` (default: the jobs' `report.columns`).
    """
    if metric not in FINAL_METRICS:
        raise KeyError(f"--metric {metric}: not one of {', '.join(FINAL_METRICS)}")
    base = Path(os.path.commonpath(folders))  # job names are relative to it, so they stay short
    rows = [read_job(job, base) for folder in folders for job in find_jobs(folder)]
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) under {', '.join(map(str, folders))}")
    table, by = summarise(rows, by)
    grouped = group(table, by)
    shown = list(dict.fromkeys([*leading_columns(table, grouped, columns), metric, "test_acc", "val_acc", "train_acc"]))
    markdown = to_markdown(grouped, by, shown)
    write_csv(table.drop(columns="_path"), out / "summary.csv")
    write_csv(grouped, out / "summary_grouped.csv")
    records.write_text(out / "summary.md", markdown + STD_NOTE)
    curves = read_curves(table)
    write_csv(curves, out / "curves.csv")
    plots.draw_all(table, curves, by, metric, out)
    symmetry = read_curves(table, records.SYMMETRY_FILE)
    if len(symmetry):
        plots.draw_symmetry(table, symmetry, by, out)
    landscape = read_curves(table, records.LANDSCAPE_FILE)
    if len(landscape):
        write_csv(landscape, out / "landscape_curves.csv")
        plots.draw_landscape(table, landscape, by, out)
    if echo:
        print(markdown, end="")
    counts = table["status"].value_counts()
    print(f"{len(table)} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES if counts.get(s, 0)
                                            or s != "incomplete") + f" -> {out / 'summary.csv'}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlbasics.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep folders, or a folder holding several")
    parser.add_argument("--out", type=Path, help="where the tables go (default: the one DIR given)")
    parser.add_argument("--by", help="comma-separated keys to group by (default: the swept keys except seed)")
    parser.add_argument("--metric", default="test_acc", help=f"headline metric: {', '.join(FINAL_METRICS)}")
    parser.add_argument("--columns", help="comma-separated result columns the table leads with "
                                          "(default: the jobs' report.columns)")
    parser.add_argument("--quiet", action="store_true", help="do not print the grouped table")
    args = parser.parse_args(argv)
    for folder in args.dirs:
        if not folder.is_dir():
            sys.exit(f"mlbasics.report: {folder} is not a folder")
    if args.out is None and len(args.dirs) > 1:
        sys.exit("mlbasics.report: several folders given: name the output folder with --out")
    out = (args.out or args.dirs[0]).resolve()
    if out.exists() and not out.is_dir():
        sys.exit(f"mlbasics.report: --out {out} is a file; name a folder (it is created if missing)")
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by is not None else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        report([d.resolve() for d in args.dirs], out, by=by, metric=args.metric, echo=not args.quiet,
               columns=columns)
    except (FileNotFoundError, KeyError) as err:
        sys.exit(f"mlbasics.report: {err.args[0]}")
    except OSError as err:  # a full disk or a folder that cannot be written: the jobs' files are untouched
        sys.exit(f"mlbasics.report: {err}")


if __name__ == "__main__":
    main()
