"""`toolkit compare` end to end: the grid, resuming, failed rows, tables and plots."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import toolkit.runner.grid as compare
import toolkit.runner.local as local
from toolkit import PrunerSpec, hookimpl
from toolkit.cli import main
from toolkit.errors import UsageError
from toolkit.runner.grid import load_grid, run_grid
from toolkit.plugins import get_registry
from toolkit.results.report import write_report


class Exploding:
    def prune(self, request):
        raise RuntimeError("this pruner always fails")


class ExplodingPlugin:
    @hookimpl
    def register_pruners(self, register):
        register(PrunerSpec("exploding", "structured", "test", "raises on purpose", Exploding))


@pytest.fixture
def exploding_plugin():
    registry = get_registry()
    registry.register(ExplodingPlugin(), name="exploding-plugin")
    yield
    registry.unregister("exploding-plugin")


def tiny_grid(**overrides):
    run = {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "pruning_steps": 2, "latency_runs": 2, "latency_runtimes": ["eager"],
           "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}}
    return load_grid(None, archs=["fpn", "linknet"], plugins=["l1", "level"], sparsities=[0.3, 0.6],
                     datasets=["synthetic"], examples=2, run=run, **overrides)


def test_grid_resumes_without_recomputing_or_losing_cells(tmp_path, monkeypatch):
    grid = tiny_grid()
    calls = []
    real_run_cell = local.run_cell

    def counting_run_cell(cell, *args, **kwargs):
        calls.append(cell.id)
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(local, "run_cell", counting_run_cell)

    def interrupt_after_three(cell, row):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C part-way through the grid

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, tmp_path, on_cell=interrupt_after_three)
    first = list(calls)
    assert len(first) == 3
    saved = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in saved] == first, "every finished cell is on disk after the interrupt"

    calls.clear()
    rows = run_grid(grid, tmp_path)
    assert not set(calls) & set(first), "finished cells must not be recomputed"
    assert len(calls) == 5 and len(rows) == 8
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    # Train once, prune many: one dense model per architecture.
    assert sorted(p.parent.name for p in (tmp_path / "dense").glob("*/dense.pt")) == ["fpn__synthetic__s0", "linknet__synthetic__s0"]
    assert not list(tmp_path.rglob("*_last.pt")), "finished stages keep no resume checkpoints (optimiser state)"

    by_cell = {r["cell"]: r for r in rows.values()}
    structured = by_cell["fpn__synthetic__l1__0.6__s0"]
    assert structured["params_pruned"] < structured["params_dense"]
    assert structured["flops_reduction"] > 0.3
    # FPN's GroupNorm blocks lose whole channels per group of 4: 3 of 4 at rate 0.6, so a little more is reached
    assert structured["target_kind"] == "rate" and structured["reached"] == structured["channel_rate"]
    assert structured["reached"] == pytest.approx(0.6, abs=0.03)
    unstructured = by_cell["fpn__synthetic__level__0.6__s0"]
    assert unstructured["params_pruned"] == unstructured["params_dense"]
    assert unstructured["target_kind"] == "sparsity"
    assert unstructured["zero_fraction_pruned"] == pytest.approx(0.6, abs=0.01) == unstructured["reached"]
    assert unstructured["zip_bytes_pruned"] < unstructured["zip_bytes_dense"]
    for r in rows.values():
        assert r["torch"] == torch.__version__ and r["seed"] == 0 and "torch_pruning" in r

    # The tables hold the per-cell numbers.
    report = write_report(tmp_path)
    with (tmp_path / "results.csv").open() as f:
        table = {r["cell"]: r for r in csv.DictReader(f) if r["seed"] != "all"}
    assert set(table) == set(by_cell)
    for cell, r in by_cell.items():
        assert float(table[cell]["params_pruned"]) == r["params_pruned"]
        assert float(table[cell]["test_iou_pruned"]) == pytest.approx(r["test_iou_pruned"])
    md = (tmp_path / "results.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| fpn | synthetic | l1 | structured | rate 60% | 62.2 | NO |"))
    assert f"{100 * structured['flops_reduction']:.1f}" in line
    assert f"{structured['test_iou_pruned']:.4f}" in line
    per_class = report.read_text().split("Per-class test IoU")[1]
    assert "| method | target | n | background | fair | poor | severe |" in per_class
    row = next(l for l in per_class.splitlines() if l.startswith("| l1 | rate 60% | 1 |"))
    assert row.split(" | ")[4] == f"{structured['test_iou_per_class_pruned'][1]:.3f}", "fair IoU of that cell"
    tex = (tmp_path / "results.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and tex.count(r"\\") >= 10
    for png in ("pareto.png", "latency_vs_flops.png", "curves.png", "examples.png"):
        path = tmp_path / png
        assert path.stat().st_size > 10_000, f"{png} looks empty"
        assert f"]({png})" in report.read_text()


def test_failing_plugin_is_a_failed_row_the_grid_goes_on_and_the_exit_status_says_so(tmp_path, exploding_plugin, capsys):
    argv = [
        "compare", "--plugins", "exploding,level", "--archs", "fpn", "--sparsities", "0.5", "--datasets", "synthetic",
        "--encoder", "resnet18", "--image-size", "64", "--limit", "16", "--epochs", "1", "--batch-size", "2",
        "--steps-per-epoch", "1", "--out", str(tmp_path), "--no-progress",
    ]
    assert main(argv) == 1, "a failed cell is a failed command, after every row and the report are written"
    rows = {json.loads(l)["plugin"]: json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()}
    assert rows["exploding"]["status"] == "failed"
    assert "RuntimeError: this pruner always fails" in rows["exploding"]["error"]
    assert rows["level"]["status"] == "ok"
    assert "failed: RuntimeError: this pruner always fails" in (tmp_path / "results.md").read_text()
    out, err = capsys.readouterr()
    assert "failed: fpn__synthetic__exploding__0.5__s0: RuntimeError: this pruner always fails" in out
    assert "1 cells ok, 1 failed" in out and "1 cell(s) failed" in err
    assert main([*argv, "--allow-failed"]) == 0, "for scripts that expect failures"
    assert "1 cells ok, 1 failed" in capsys.readouterr().out


def test_unknown_plugin_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["compare", "--plugins", "fpgm,nosuch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown pruner 'nosuch'" in err and "fpgm" in err
    assert not (tmp_path / "results.jsonl").exists()


def test_resume_refuses_other_settings(tmp_path):
    grid = tiny_grid()
    compare._check_same_settings(grid, tmp_path, force=False)
    grid.run.image_size = 96
    with pytest.raises(Exception, match="other settings .*image_size"):
        compare._check_same_settings(grid, tmp_path, force=False)


def test_resume_takes_settings_that_change_no_result(tmp_path):
    """How often it validates and whether it shows bars do not make other rows: resuming is fine."""
    grid = tiny_grid()
    compare._check_same_settings(grid, tmp_path, force=False)
    grid.run.train.val_every, grid.run.train.progress = 5, not grid.run.train.progress
    grid.run.finetune = {**(grid.run.finetune or {}), "val_every": 2}
    compare._check_same_settings(grid, tmp_path, force=False)


def test_sparsities_can_differ_per_pruner(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text('plugins = ["fpgm", "agp"]\nsparsities = [0.25, 0.75]\n'
                      '[plugin_sparsities]\nagp = [0.5, 0.9]\n[run]\nlimit = 0\n')
    grid = load_grid(config)
    assert sorted((c.plugin, c.target.value) for c in compare.cells(grid) if c.arch == "fpn") == [
        ("agp", 0.5), ("agp", 0.9), ("fpgm", 0.25), ("fpgm", 0.75)]
    assert grid.run.limit is None, "limit = 0 reads every image (TOML has no null)"
    config.write_text('plugins = ["fpgm", "agp"]\ntargets = ["flops=0.5"]\n[plugin_targets]\nagp = ["0.9", "flops=0.25"]\n')
    assert sorted((c.plugin, str(c.target)) for c in compare.cells(load_grid(config)) if c.arch == "fpn") == [
        ("agp", "flops=0.25"), ("agp", "sparsity=0.9"), ("fpgm", "flops=0.5")]
    config.write_text('[plugin_sparsities]\nagp = 0.5\n')
    with pytest.raises(Exception, match="plugin_sparsities.agp must be a list"):
        load_grid(config)


def test_variants_compare_one_pruner_with_other_options_in_one_grid(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(
        'archs = ["linknet"]\nplugins = ["l1", "l1-protected", "l1-distilled"]\nsparsities = [0.5]\n'
        '[variants.l1-protected]\nplugin = "l1"\noptions = {protect = "first_conv"}\n'
        '[variants.l1-distilled]\nplugin = "l1"\ndistill = {enabled = true, temperature = 2.0}\n'
        '[run]\nencoder = "resnet18"\nimage_size = 64\nlimit = 16\nepochs_train = 1\nepochs_prune = 0\n'
        'epochs_finetune = 1\nlatency_runs = 2\ndevice = "cpu"\n[run.train]\nbatch_size = 2\nmax_steps_per_epoch = 2\n'
        'progress = false\n')
    grid = load_grid(config, examples=0)
    rows = {r["method"]: r for r in run_grid(grid, tmp_path / "out").values()}
    assert set(rows) == {"l1", "l1-protected", "l1-distilled"}
    assert all(r["plugin"] == "l1" and r["status"] == "ok" for r in rows.values()), rows
    assert rows["l1-protected"]["meta"]["protected"] == ["encoder.conv1"]
    assert rows["l1-distilled"]["distill"] and not rows["l1"]["distill"]
    assert rows["l1-protected"]["options"] == {"protect": "first_conv"}
    md = write_report(tmp_path / "out").parent.joinpath("results.md").read_text()
    assert "| linknet | synthetic | l1-distilled |" in md
    config.write_text('plugins = ["l1-x"]\n[variants.l1-x]\nplugin = "l1"\noptions = {protect = "tail"}\n')
    with pytest.raises(Exception, match="cannot protect tail"):
        load_grid(config)


def test_pareto_legend_names_each_method_once(tmp_path, monkeypatch):
    """Two targets of one method are two points but one legend entry; the dense model is the star."""
    import matplotlib.figure

    from toolkit.results.plots import plot_pareto

    seen = {}
    real_legend = matplotlib.figure.Figure.legend

    def spy(fig, handles, labels, **kwargs):
        seen["labels"] = list(labels)
        return real_legend(fig, handles, labels, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "legend", spy)
    costs = {"flops_pruned": 1e9, "params_pruned": 1e6, "latency_ms_pruned": 10.0, "zip_bytes_pruned": 1e6}
    rows = [{"arch": "fpn", "dataset": "synthetic", "method": m, "kind": "structured", "test_iou_pruned": 0.5,
             **{k: v * f for k, v in costs.items()}} for m in ("fpgm", "random") for f in (0.5, 0.25)]
    dense = [{"arch": "fpn", "dataset": "synthetic", "test_iou_pruned": 0.6, **costs}]
    assert plot_pareto(rows, dense, tmp_path / "pareto.png").exists()
    assert seen["labels"] == ["fpgm", "random", "dense model (before pruning)"]


def test_checklist_names_what_moves_a_seeds_numbers_between_machines():
    """Kernels by instruction set, timm, numpy and Pillow can shift a seed's result: the checklist says which ran."""
    from toolkit.results.report import checklist

    env = compare.environment()
    rows = [dict(status="ok", arch="fpn", dataset="synthetic", seed=s, method=m, plugin=m, target_kind="flops",
                 target=t, budget_steps=10, **env) for s in (0, 1) for m, t in (("fpgm", 0.25), ("fpgm", 0.5))]
    text = "\n".join(checklist(rows))
    for name in ("timm", "numpy", "pillow", "torch_pruning"):
        assert f"{name} {env[name]}" in text
    assert f"{env['cpu_capability']} kernels" in text and env["cpu_capability"]
    assert "[x] Seeds: 2 (0, 1)" in text and "every cell trained 10 steps" in text
    one_seed = "\n".join(checklist([r for r in rows if r["seed"] == 0]))
    assert "[ ] Seeds: 1" in one_seed and "cannot be told from seed noise" in one_seed


def test_a_cells_time_is_its_own_not_its_dense_models(tmp_path, monkeypatch):
    """The first cell of a dense model used to carry the dense training's minutes (local only; Ray never did)."""
    import time as clock

    def slow_dense(*args, **kwargs):
        clock.sleep(1.5)
        return {"test_iou": 0.5}

    monkeypatch.setattr(local, "train_dense", slow_dense)
    monkeypatch.setattr(local, "run_cell_guarded", lambda *a, **k: {"status": "ok", "error": None})
    seen = []

    class Spy:
        def record(self, cell, columns, seconds):
            seen.append(seconds)

    grid = tiny_grid()
    grid.plugins, grid.sparsities, grid.archs = ["level"], [0.3], ["fpn"]
    local.run_locally(grid, tmp_path, compare.cells(grid), Spy())
    assert len(seen) == 1 and seen[0] < 0.5


def test_missed_target_is_a_warning_in_the_cli_line_the_row_and_the_report(tmp_path, capsys):
    """Unstructured zeros remove no FLOPs: asked for -50% FLOPs, the row reaches 0% and must say so loudly."""
    code = main([
        "compare", "--plugins", "level", "--archs", "fpn", "--targets", "flops=0.5", "--datasets", "synthetic",
        "--encoder", "resnet18", "--image-size", "64", "--limit", "16", "--epochs", "1", "--batch-size", "2",
        "--steps-per-epoch", "1", "--out", str(tmp_path), "--no-progress",
    ])
    assert code == 0
    row = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert row["status"] == "ok" and row["target_met"] is False and row["flops_reduction"] == 0.0
    missed = "target flops=0.5 missed by 50.0 points (reached 0.000)"
    assert missed in row["warnings"]
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("fpn__synthetic__level__flops0.5__s0: "))
    assert f"WARNING: {missed}" in line
    report = (tmp_path / "report.md").read_text()
    assert "## Warnings" in report and f"- **fpn__synthetic__level__flops0.5__s0**: {missed}" in report
    assert f"ok; WARNING: {missed}" in (tmp_path / "results.md").read_text(), "and in the table's status"


def test_loud_failures_name_a_missed_target_an_emptied_layer_and_zero_iou():
    from toolkit.results.alerts import row_warnings

    fine = {"target_kind": "flops", "target": 0.5, "reached": 0.495, "target_met": True, "test_iou_pruned": 0.41}
    assert row_warnings(fine) == []
    bad = {**fine, "reached": 0.179, "target_met": False, "test_iou_pruned": 0.0}
    assert row_warnings(bad, ["decoder.conv1", "decoder.conv2"]) == [
        "target flops=0.5 missed by 32.1 points (reached 0.179)",
        "2 layer(s) left with no channels: decoder.conv1, decoder.conv2",
        "test IoU 0.000: the model finds no defect",
    ]
    gradual = {**fine, "recovery_steps": 0, "steps_prune": 4, "steps_finetune": 0}
    assert row_warnings(gradual) == ["trained 4 steps after pruning, over its recovery budget of 0 "
                                     "(a gradual pruner takes a step per pruning step at least)"]
    assert row_warnings({**gradual, "from_scratch": True, "steps_finetune": 20}) == [], "narrow trains from scratch"


def test_iou_change_is_against_the_same_budget_control_where_there_is_one():
    from toolkit.results.control import VS_CONTROL, VS_DENSE, with_deltas

    def row(plugin, seed, budget, iou, arch="fpn", target=0.5):
        return dict(status="ok", arch=arch, dataset="synthetic", plugin=plugin, method=plugin, seed=seed, target=target,
                    recovery_steps=budget, test_iou_pruned=iou, test_iou_change=iou - 0.6)

    rows = with_deltas([row("dense", 0, 10, 0.70, target=0.0), row("dense", 1, 10, 0.50, target=0.0),
                        row("l1", 0, 10, 0.65), row("l1", 1, 10, 0.52), row("l1", 0, 0, 0.10),
                        row("l1", 0, 10, 0.40, arch="unet")])
    deltas = [(r["test_iou_delta"], r["delta_reference"]) for r in rows]
    assert deltas[2][0] == pytest.approx(-0.05) and deltas[3][0] == pytest.approx(0.02), "same seed's control"
    assert deltas[2][1] == deltas[3][1] == VS_CONTROL
    assert deltas[4] == (pytest.approx(0.10 - 0.6), VS_DENSE), "no control at budget 0: the dense model before pruning"
    assert deltas[5] == (pytest.approx(0.40 - 0.6), VS_DENSE), "no control for that architecture"


def test_a_folder_made_before_bn_recalibration_resumes_with_it_off(tmp_path):
    grid = tiny_grid()
    grid.run.bn_recalibration = 0
    compare._check_same_settings(grid, tmp_path, force=False)
    settings = json.loads((tmp_path / "settings.json").read_text())
    del settings["bn_recalibration"]  # as written before the setting existed
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    compare._check_same_settings(grid, tmp_path, force=False)
    with pytest.raises(Exception, match="bn_recalibration.*add --bn-recalibration 0"):
        compare._check_same_settings(tiny_grid(), tmp_path, force=False)


def test_default_grid_holds_the_dense_control_at_target_zero_beside_every_budget():
    grid = load_grid(None, recovery_steps=[0, 40])
    ids = [c.id for c in compare.cells(grid)]
    assert "fpn__synthetic__dense__0__s0__r0" in ids and "unet__synthetic__dense__0__s0__r40" in ids
    assert len(ids) == 2 * 2 * (1 + 3 * 2), "2 archs x 2 budgets x (control + 3 pruners x 2 targets)"
    assert all(not c.id.endswith(("__r0", "__r40")) for c in compare.cells(load_grid(None))), "no axis: ids as before"
    with pytest.raises(Exception, match="recovery_steps must be whole numbers"):
        load_grid(None, recovery_steps=[-1])


def test_a_variant_sets_recovery_settings_but_not_the_shared_dense_training(tmp_path):
    """``run = {...}`` in a variant changes how its pruned models recover (BatchNorm recalibration,
    the recovery rate), leaves the grid's settings and the other methods alone, and refuses a setting
    the dense model shared by every cell of a seed is trained with."""
    from toolkit.runner.grid import settings_of

    config = tmp_path / "grid.toml"
    config.write_text('plugins = ["l1", "l1-lr"]\n[variants.l1-lr]\nplugin = "l1"\n'
                      'run = {bn_recalibration = 0, recovery_lr = "by-flops", finetune = {schedule = "cosine"}}\n'
                      '[run]\nbn_recalibration = 7\n[run.finetune]\nwarmup_steps = 3\n')
    grid = load_grid(config)
    variant, plain = settings_of(grid, "l1-lr"), settings_of(grid, "l1")
    assert (variant.bn_recalibration, variant.train.recovery_lr) == (0, "by-flops")
    assert variant.finetune == {"warmup_steps": 3, "schedule": "cosine"}
    assert (plain.bn_recalibration, plain.train.recovery_lr, plain.finetune) == (7, "scale", {"warmup_steps": 3})
    assert grid.run.bn_recalibration == 7 and grid.run.finetune == {"warmup_steps": 3}
    config.write_text('plugins = ["l1-x"]\n[variants.l1-x]\nplugin = "l1"\nrun = {train = {batch_size = 2}}\n')
    with pytest.raises(UsageError, match="cannot differ between cells sharing a dense model"):
        load_grid(config)
    config.write_text('plugins = ["l1-x"]\n[variants.l1-x]\nplugin = "l1"\nrun = {recovery_lr = "fast"}\n')
    with pytest.raises(UsageError, match="recovery_lr"):
        load_grid(config)
