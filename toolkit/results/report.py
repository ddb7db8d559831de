"""Tables (Markdown, CSV, LaTeX booktabs), figures and a reporting checklist from a compare run.

Every number comes from the per-cell rows of ``results.jsonl``; nothing is
recomputed but the mean and spread over seeds (``toolkit.results.aggregate``),
so a table can always be traced back to its cells. Tables show one line per
(arch, dataset, pruner, target) with ``mean ± std`` over ``n`` seeds for every
column that varies; the CSV keeps one row per seed plus the aggregate.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolkit.results.aggregate import aggregate, dense_rows
from toolkit.results.alerts import warning_text
from toolkit.results.control import VS_CONTROL, VS_DENSE, with_deltas
from toolkit.results.plots import (
    STAGE_COLORS, _panel_grid, _save, plot_examples, plot_latency_vs_flops, plot_pareto, plot_recovery,
)
from toolkit.results.runtimes import LABELS, RUNTIMES, column, speedup_column
from toolkit.results.store import iter_rows

NOT_IN_CSV = {"curves", "examples", "traceback", "prune_history", "meta"}
CAPTION = "Pruning results (mean $\\pm$ std over seeds)"
DELTA = "IoU change pts"  # its header names the reference (``_delta_column``)
TARGET_NAMES = {"rate": "rate", "sparsity": "sparsity", "flops": "FLOPs -", "params": "params -", "latency": "latency -"}


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pm(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0, tex: bool = False) -> str:
    """``mean ± std`` when the value varies over seeds, else the value once."""
    x = r.get(key)
    if _missing(x):
        return ""
    text = format(float(x) / scale, fmt)
    std = r.get(f"{key}_std")
    if r.get("n", 1) > 1 and not _missing(std) and format(float(std) / scale, fmt) != format(0.0, fmt):
        spread = format(float(std) / scale, fmt.replace("+", ""))  # a spread has no sign
        text = rf"${text} \pm {spread}$" if tex else f"{text} ± {spread}"
    return text


def _pct(key: str) -> Callable[[dict[str, Any], bool], str]:
    return lambda r, tex=False: _pm(r, key, ".1f", 0.01, tex)


def _num(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any], bool], str]:
    return lambda r, tex=False: _pm(r, key, fmt, scale, tex)


def _target(r: dict[str, Any], tex: bool = False) -> str:
    if r.get("method") == "(dense)":
        return "" if tex else "-"
    name = TARGET_NAMES.get(r.get("target_kind", ""), r.get("target_kind", ""))
    text = f"{name}{100 * float(r['target']):.0f}%" if name.endswith("-") else f"{name} {100 * float(r['target']):.0f}%"
    return text.replace("%", r"\%") if tex else text


def _met(r: dict[str, Any], tex: bool = False) -> str:
    if r.get("method") == "(dense)" or "target_met" not in r:
        return ""
    return "yes" if r["target_met"] else "NO"


def _status(r: dict[str, Any], tex: bool = False) -> str:
    if r["status"] != "ok":
        return f"failed: {r.get('error', '')}"
    return "ok" + warning_text(r)


@dataclass(frozen=True)
class Column:
    header: str
    latex: str
    value: Callable[..., str]


COLUMNS: list[Column] = [
    Column("arch", "Arch.", lambda r, tex=False: r["arch"]),
    Column("dataset", "Dataset", lambda r, tex=False: r["dataset"]),
    Column("method", "Method", lambda r, tex=False: r["method"]),
    Column("kind", "Kind", lambda r, tex=False: r.get("kind", "")),
    Column("target", "Target", _target),
    Column("reached %", r"Reached (\%)", _pct("reached")),
    Column("met", "Met", _met),
    Column("params M", "Params (M)", _num("params_pruned", ".2f", 1e6)),
    Column("params -%", r"$\Delta$Params (\%)", _pct("params_reduction")),
    Column("GMACs", "GMACs", _num("flops_pruned", ".3f", 1e9)),
    Column("FLOPs -%", r"$\Delta$FLOPs (\%)", _pct("flops_reduction")),
    # one ms and one speed-up column per runtime timed (latency_views) go here
    Column("GPU ms", "GPU (ms)", _num("latency_gpu_ms_pruned", ".2f")),
    Column("GPU speedup x", "GPU speed-up", _num("latency_gpu_speedup", ".2f")),
    Column("zip MB", "Zipped (MB)", _num("zip_bytes_pruned", ".2f", 1e6)),
    Column("budget steps", "Steps", _num("budget_steps", ".0f")),
    Column("test IoU", "IoU", _num("test_iou_pruned", ".4f")),
    Column(DELTA, r"$\Delta$IoU (pts)", _num("test_iou_delta", "+.1f", 0.01)),
    Column("n", "n", lambda r, tex=False: str(r.get("n", 1))),
    Column("status", "Status", _status),
]


def delta_reference(rows: Sequence[dict[str, Any]]) -> str:
    """What the IoU change of these rows is against: the same-budget control, the dense model before
    pruning, or both (some rows have no control)."""
    refs = {r.get("delta_reference", VS_DENSE) for r in rows if r.get("status") == "ok" and r.get("method") != "(dense)"}
    return refs.pop() if len(refs) == 1 else f"{VS_CONTROL} (* {VS_DENSE}: no control)"


def _delta_column(rows: Sequence[dict[str, Any]]) -> Column:
    """The IoU change, its header saying against what; a row measured otherwise than the header says is
    starred (no control for it), and the dense model before pruning has none under a control header."""
    reference = delta_reference(rows)
    plain = _num("test_iou_delta", "+.1f", 0.01)

    def value(r: dict[str, Any], tex: bool = False) -> str:
        own = r.get("delta_reference", VS_DENSE)
        if reference == own:
            return plain(r, tex)
        return "" if r.get("method") == "(dense)" else plain(r, tex) + "*"

    short = "control" if reference.startswith(VS_CONTROL) else "dense"
    return Column(f"IoU change vs {short} pts", rf"$\Delta$IoU vs {short} (pts)", value)


SHORT = {"eager": "eager", "onnxruntime": "ORT", "openvino": "OpenVINO", "onnxruntime_gpu": "ORT GPU"}


@dataclass(frozen=True)
class LatencyView:
    """Where a runtime's latency is read from: the quiet re-timing's columns where the run has
    them (median, interquartile range), else the in-grid ones, which are rough."""

    runtime: str
    ms: str  # column of the median ms (``_pruned``)
    iqr: str | None
    speedup: str
    quiet: bool

    @property
    def label(self) -> str:
        return f"{LABELS[self.runtime]} ms, " + ("quiet re-timing" if self.quiet else "in-grid (rough)")


def latency_views(rows: Sequence[dict[str, Any]]) -> list[LatencyView]:
    """One view per runtime any row was timed on, in ``RUNTIMES`` order."""
    views = []
    for runtime in RUNTIMES:
        if any(f"retimed_ms_{runtime}_pruned" in r for r in rows):
            views.append(LatencyView(runtime, f"retimed_ms_{runtime}_pruned", f"retimed_ms_{runtime}_iqr_pruned",
                                     f"retimed_{runtime}_speedup", True))
        elif any(f"{column(runtime)}_pruned" in r for r in rows):
            views.append(LatencyView(runtime, f"{column(runtime)}_pruned", None, speedup_column(runtime), False))
    return views


def deployed_view(views: Sequence[LatencyView]) -> LatencyView | None:
    """The latency a figure shows: ONNX Runtime's where it was timed (what users deploy), else the first."""
    return next((v for v in views if v.runtime == "onnxruntime"), views[0] if views else None)


def _latency_columns(view: LatencyView) -> list[Column]:
    name = SHORT[view.runtime] + ("" if view.quiet else " (in-grid)")

    def ms(r: dict[str, Any], tex: bool = False) -> str:
        text = _pm(r, view.ms, ".1f", 1.0, tex)
        iqr = r.get(view.iqr) if view.iqr else None
        if not text or _missing(iqr):
            return text
        return f"{text[:-1]} \\; [{float(iqr):.1f}]$" if text.startswith("$") else f"{text} [{float(iqr):.1f}]"

    header = f"{name} ms" + (" [IQR]" if view.quiet else "")
    return [Column(header, _tex(header) .replace("[IQR]", "(IQR)"), ms),
            Column(f"{name} x", f"{_tex(name)} speed-up", _num(view.speedup, ".2f"))]


def _columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The latency columns of every runtime timed; the GPU columns only when a row ran on a GPU; the IoU
    change's header names its reference."""
    gpu = any("latency_gpu_ms_pruned" in r for r in rows)
    at = next(i for i, c in enumerate(COLUMNS) if c.header == "FLOPs -%") + 1
    latency = [c for v in latency_views(rows) for c in _latency_columns(v)]
    return [_delta_column(rows) if c.header == DELTA else c
            for c in [*COLUMNS[:at], *latency, *COLUMNS[at:]] if gpu or not c.header.startswith("GPU")]


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dense reference first, then each (arch, dataset)'s aggregated cells, then failed cells one by one."""
    def order(r: dict[str, Any]) -> tuple:
        return (r["dataset"], r["arch"], r["method"], r.get("target_kind", ""), float(r.get("target", 0)))

    cells = sorted(aggregate(rows), key=order)
    failed = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: (*order(r), str(r.get("seed"))))
    out: list[dict[str, Any]] = []
    dense = sorted(dense_rows(rows), key=lambda r: (r["dataset"], r["arch"]))
    for ref in dense:
        out.append(ref)
        out.extend(r for r in cells if (r["arch"], r["dataset"]) == (ref["arch"], ref["dataset"]))
    listed = {id(r) for r in out}
    out.extend(r for r in cells if id(r) not in listed)
    out.extend(failed)
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in table_rows(rows):
        lines.append("| " + " | ".join(c.value(r).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def per_class_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Test IoU of every class (background included), dense first: where the pruned model lost."""
    ok = [r for r in table_rows(rows) if r["status"] == "ok"]
    out: list[str] = []
    for (arch, dataset) in dict.fromkeys((r["arch"], r["dataset"]) for r in ok):
        group = [r for r in ok if (r["arch"], r["dataset"]) == (arch, dataset)]
        width = max(len(r.get("test_iou_per_class_pruned") or []) for r in group)
        names = next((r["class_names"] for r in group if r.get("class_names")), None) or [f"class {i}" for i in range(width)]
        out += [f"**{arch} on {dataset}**", "", "| method | target | n | " + " | ".join(names) + " |",
                "|" + "---|" * (len(names) + 3)]
        for r in group:
            values = r.get("test_iou_per_class_pruned") or []
            stds = r.get("test_iou_per_class_pruned_std") or [0.0] * len(values)
            cells = [_pm({"v": v, "v_std": s, "n": r.get("n", 1)}, "v", ".3f") for v, s in zip(values, stds)]
            out.append(f"| {r['plugin']} | {_target(r)} | {r.get('n', 1)} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _tex(s: str) -> str:
    if s.startswith("$") and s.endswith("$"):
        return s
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")


def latex_table(rows: Sequence[dict[str, Any]], caption: str = CAPTION) -> str:
    cols = [c for c in _columns(rows) if c.header != "status"]
    body = []
    for r in table_rows(rows):
        if r["status"] != "ok":
            continue
        body.append(" & ".join(_tex(c.value(r, True)) if c.value is not _target else c.value(r, True) for c in cols) + r" \\")
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
        r"\begin{tabular}{" + "l" * 5 + "r" * (len(cols) - 5) + "}", r"\toprule",
        " & ".join(c.latex for c in cols) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per seed, then one aggregate per (arch, dataset, pruner, target) with ``seed = all``,
    ``n`` and ``<column>_std``."""
    everything = [*rows, *aggregate(rows)]
    keys: list[str] = []
    for r in everything:
        keys.extend(k for k in r if k not in NOT_IN_CSV and k not in keys)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in everything:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items() if k in keys})
    return path


def plot_stage_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Validation IoU (EMA) over the prune and fine-tune stages, a panel per (arch, dataset); first seed only."""
    first_seed = min((r.get("seed", 0) for r in rows), key=str, default=0)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("curves") and r.get("seed", 0) == first_seed:
            groups.setdefault((r["arch"], r["dataset"]), []).append(r)
    fig, axes = _panel_grid(max(1, len(groups)))
    for ax, (key, group) in zip(axes, sorted(groups.items())):
        n_prune = max((sum(c["stage"] == "prune" for c in r["curves"]) for r in group), default=0)
        # colour = pruner, line style = target: 15 lines stay tellable apart
        colours = {p: f"C{i % 10}" for i, p in enumerate(sorted({r["method"] for r in group}))}
        targets = sorted({(r["target_kind"], r["target"]) for r in group})
        styles = {t: ["-", "--", ":", "-."][i % 4] for i, t in enumerate(targets)}
        for r in sorted(group, key=lambda r: (r["method"], r["target_kind"], r["target"])):
            pruning = [c for c in r["curves"] if c["stage"] == "prune"]
            tuning = [c for c in r["curves"] if c["stage"] != "prune"]
            # fine-tune starts after the prune stage for every cell, one-shot pruners included
            xs = [*range(1, len(pruning) + 1), *range(n_prune + 1, n_prune + len(tuning) + 1)]
            curve = pruning + tuning
            colour = colours[r["method"]]
            ax.plot(xs, [c["val_iou_ema"] for c in curve], styles[(r["target_kind"], r["target"])], lw=1.2,
                    color=colour, label=f"{r['plugin']} {_target(r)}")
            ax.plot(xs, [c["val_iou"] for c in curve], "o", ms=2, alpha=0.3, color=colour)
        if n_prune:
            ax.axvline(n_prune + 0.5, color=STAGE_COLORS["finetune"], lw=0.8, ls=":")
        ax.set_title(f"{key[0]} on {key[1]}: prune | fine-tune (seed {first_seed})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val IoU (EMA line, raw dots)")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return _save(fig, path)


def plot_report_examples(rows: Sequence[dict[str, Any]], run_dir: Path, path: Path, max_panels: int = 5) -> Path | None:
    """Test images with ground truth and predictions of the dense model and each pruned one,
    for the first (arch, dataset, seed) and pruner of the grid, at every target."""
    from toolkit.runner.cell import Cell
    from toolkit.pruning.targets import Target

    ok = [r for r in rows if r["status"] == "ok" and (run_dir / "cells" / r["cell"] / "examples.npz").exists()]
    if not ok:
        return None
    first = ok[0]
    same = ("arch", "dataset", "method", "seed")
    group = sorted([r for r in ok if all(r.get(k) == first.get(k) for k in same)],
                   key=lambda r: (r["target_kind"], float(r["target"])))
    cell = Cell(first["arch"], first["dataset"], first["plugin"], Target("sparsity", 0.5), first.get("seed", 0))
    dense_file = run_dir / "dense" / cell.dense_id / "examples.npz"
    if not dense_file.exists():
        return None
    dense = np.load(dense_file)
    num_classes = len(first.get("class_names") or []) or int(dense["truth"].max()) + 1
    panels = [("dense", dense["pred"])]
    panels += [(f"{r['plugin']} {_target(r)}", np.load(run_dir / "cells" / r["cell"] / "examples.npz")["pred"])
               for r in group[:max_panels]]
    examples = []
    for i in range(min(2, dense["truth"].shape[0])):
        for label, preds in panels:
            examples.append((f"{first['arch']} img {i}\n{label}", dense["image"][i], dense["truth"][i], preds[i]))
    return plot_examples(examples, path, num_classes)


def checklist(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The reporting checklist of Blalock et al. (2020), filled from the run."""
    ok = [r for r in rows if r["status"] == "ok"]
    pairs = sorted({(r["arch"], r["dataset"]) for r in ok})
    seeds = sorted({r.get("seed") for r in ok}, key=str)
    points: dict[str, set[str]] = {}
    for r in ok:
        points.setdefault(r["method"], set()).add(_target(r))
    budgets = sorted({int(r["budget_steps"]) for r in ok if r.get("budget_steps") is not None})
    env = ok[0] if ok else (rows[0] if rows else {})
    dense = "yes: every table starts with the unpruned model of each architecture, dataset and seed" if ok else "no"
    same_budget = (f"yes: every cell trained {budgets[0]} steps in total (dense + prune + fine-tune)" if len(budgets) == 1
                   else f"NO: cells trained {', '.join(map(str, budgets))} steps in total (see the budget column)")
    return [
        "## Reporting checklist", "",
        f"- [x] Architectures x datasets ({len(pairs)}): " + (", ".join(f"{a} on {d}" for a, d in pairs) or "none"),
        f"- [{'x' if all(len(v) > 1 for v in points.values()) else ' '}] Operating points per method: "
        + "; ".join(f"{p} {len(v)} ({', '.join(sorted(v))})" for p, v in sorted(points.items())),
        f"- [{'x' if ok else ' '}] Dense control: {dense}",
        f"- [{'x' if len(seeds) > 1 else ' '}] Seeds: {len(seeds)} ({', '.join(map(str, seeds))})"
        + ("" if len(seeds) > 1 else " - one seed: differences cannot be told from seed noise"),
        f"- [{'x' if len(budgets) == 1 else ' '}] Identical training budget: {same_budget}",
        f"- [x] Versions: toolkit {env.get('toolkit')}, torch {env.get('torch')}, smp {env.get('smp')}, "
        f"torch_pruning {env.get('torch_pruning')}, nni {env.get('nni')}, timm {env.get('timm')}, "
        f"numpy {env.get('numpy')}, pillow {env.get('pillow')}, python {env.get('python')}, git {env.get('git_commit')}",
        f"- [x] Hardware: {env.get('cpu')} ({env.get('machine')}, {env.get('cpu_capability')} kernels, host "
        f"{env.get('host')}); training device "
        f"{env.get('device')}; latency on {env.get('latency_device')}"
        + (f" and {env.get('latency_gpu_device')}" if env.get("latency_gpu_device") else ""),
        "",
    ]


def recovery_budgets(rows: Sequence[dict[str, Any]]) -> list[int]:
    """The recovery budgets (steps after pruning) a grid ran, smallest first."""
    return sorted({int(r["recovery_steps"]) for r in rows if r.get("recovery_steps") is not None})


def warnings_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every row's warnings (``toolkit.results.alerts``), cell by cell: what must not be read as a result."""
    warned = [r for r in rows if r.get("status") == "ok" and r.get("warnings")]
    if not warned:
        return []
    return ["## Warnings", "", f"{len(warned)} of {len(rows)} cells:", "",
            *[f"- **{r['cell']}**: {'; '.join(r['warnings'])}" for r in warned], ""]


def latency_sentence(views: Sequence[LatencyView], env: dict[str, Any]) -> str:
    """What each latency column is: the runtime, where it ran, the input, how it was timed, and
    the runtimes skipped with their reason."""
    parts = []
    for v in views:
        prefix = "retimed" if v.quiet else "latency"
        device = env.get(f"{prefix}_{v.runtime}_device")
        if v.runtime == "eager" and not v.quiet:
            device = f"eager PyTorch on {env.get('latency_device')}"
        how = (f"quiet re-timing after the grid, one process, {env.get('retimed_rounds')} interleaved rounds, "
               "median [interquartile range]" if v.quiet else "in-grid, timed while the grid ran: rough")
        parts.append(f"{SHORT[v.runtime]} = {device or LABELS[v.runtime]} ({how})")
    skipped = {rt: env.get(f"retimed_{rt}_skipped") or env.get(f"latency_{rt}_skipped") for rt in RUNTIMES}
    skipped_text = "; ".join(f"{LABELS[rt]} skipped: {why}" for rt, why in skipped.items() if why)
    return (f"Latency, batch 1, input {env.get('latency_input', '?')}, speed-up x = dense ms / pruned ms: "
            + "; ".join(parts) + "." + (f" {skipped_text}." if skipped_text else "")
            + (" The in-grid timings, rough, stay in results.csv (latency_ms_*)." if any(v.quiet for v in views) else "")
            + " ")


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` with tables and plots beside it; returns its path."""
    run_dir = Path(run_dir)
    every = with_deltas(iter_rows(run_dir))
    budgets = recovery_budgets(every)
    shown = max(budgets) if len(budgets) > 1 else None
    rows = every if shown is None else [r for r in every if r.get("recovery_steps") == shown]
    ok = [r for r in rows if r["status"] == "ok"]
    md = markdown_table(rows)
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.tex").write_text(latex_table(rows, CAPTION if shown is None else
                                                     f"{CAPTION[:-1]}, after {shown} recovery steps)"))
    write_csv(every, run_dir / "results.csv")
    figures = []
    if shown is not None:
        figures.append(plot_recovery(aggregate(every), run_dir / "recovery.png", delta_reference(every)))
    views = latency_views(ok)
    if ok:
        deployed = deployed_view(views)
        latency = (deployed.ms, deployed.label) if deployed else ("latency_ms_pruned", "CPU latency (ms)")
        figures.append(plot_pareto(aggregate(rows), dense_rows(rows), run_dir / "pareto.png", latency=latency))
        figures.append(plot_latency_vs_flops(aggregate(rows), dense_rows(rows), run_dir / "latency_vs_flops.png",
                                             [(v.ms, v.label) for v in views] or [latency]))
        figures.append(plot_stage_curves(ok, run_dir / "curves.png"))
        ex = plot_report_examples(ok, run_dir, run_dir / "examples.png")
        if ex:
            figures.append(ex)
    env = ok[0] if ok else (rows[0] if rows else {})
    n_seeds = len({r.get("seed") for r in rows})
    lines = [
        f"# Pruning comparison: {run_dir.name}", "",
        f"{len(ok)} of {len(rows)} cells finished; {len(rows) - len(ok)} failed; {n_seeds} seed(s), "
        "numbers are mean ± std over seeds where they vary (n = seeds).", "",
        *[f"![{f.stem}]({f.name})" for f in figures[:1]], "",
        "Target: `rate` = fraction of prunable output channels removed (structured), `sparsity` = fraction of "
        "prunable conv/linear weights that are zero (unstructured), `FLOPs -50%` = a cost target; reached is "
        "measured on the result, and met = within one point. FLOPs are thop MACs for one "
        f"{env.get('image_size', '?')}px image (dense kernels: zeros are counted). "
        + latency_sentence(views, env) +
        "IoU is the test-split mean over the defect classes (background excluded). budget = training steps in all "
        "(dense + prune + fine-tune). Unstructured pruning keeps dense kernels: its FLOPs and latency do not drop, "
        "its zipped file does.", "",
        f"IoU change is against the {delta_reference(rows)} (same architecture, dataset and seed"
        + (", same recovery budget); " if delta_reference(rows) != VS_DENSE else "); ")
        + ("recovery budget: the training steps after pruning (prune stage + fine-tune)." if shown is None else
           f"the table shows the largest recovery budget, **{shown} steps** after pruning (prune stage + fine-tune), "
           f"of {', '.join(map(str, budgets))}; the recovery curve above shows them all, results.csv holds every row."),
        "",
        *warnings_section(every),
        md, "",
        "Per-class test IoU (background included; blank = class absent from the test split):", "",
        per_class_markdown(rows), "",
        *[f"![{f.stem}]({f.name})" for f in figures[1:]], "",
        *checklist(rows),
        f"Settings: encoder {env.get('encoder')}, epochs train/prune/fine-tune {env.get('epochs')}, "
        f"image size {env.get('image_size')}.", "",
        "Files: results.jsonl (one row per cell and seed, every setting), results.csv (per seed + aggregates), "
        "results.tex (booktabs), cells/<id>/ (curves, checkpoints), dense/<arch>__<data>__s<seed>/.",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
