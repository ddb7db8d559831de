"""The allocation search: candidates that meet the cost target, each recalibrated and scored, the best kept."""
from __future__ import annotations

import pytest
import torch

from toolkit import PruneRequest, create_pruner
from toolkit.errors import PruningError, UsageError
from toolkit.pruning.importances import NormImportance
from toolkit.pruning.search import knob_grid, search_allocation
from toolkit.pruning.surgery import channel_counts
from toolkit.pruning.targets import Target
from toolkit.results.measure import count_flops, reduction
from toolkit.workbench.models import create_model, output_layers

X = torch.randn(1, 3, 64, 64)


def _model():
    torch.manual_seed(0)
    return create_model("unet", "resnet18", num_classes=2).eval()


def _decoder_share(model) -> float:
    """A stand-in score that the search can raise: the share of channels kept in the decoder."""
    counts = channel_counts(model)
    return sum(n for name, n in counts.items() if name.startswith("decoder")) / sum(counts.values())


def test_knobs_start_at_uniform_and_repeat_for_a_seed():
    grid = knob_grid(6, seed=3)
    assert grid[0] == (0.0, 0.0, 0.0) and len(grid) == 6
    assert grid == knob_grid(6, seed=3) and grid != knob_grid(6, seed=4)
    assert all(-1.0 <= v <= 1.0 for knobs in grid for v in knobs)


def test_every_candidate_meets_the_target_and_the_best_score_is_kept():
    model = _model()
    recalibrated = []
    allocator, best, tried, _ = search_allocation(
        model, X, Target("flops", 0.5), NormImportance(p=1), _decoder_share, candidates=6,
        recalibrate=recalibrated.append, ignored_layers=output_layers(model))
    assert len(tried) >= 4 and len(recalibrated) == len(tried), "every scored candidate was recalibrated first"
    assert all(c.reached == pytest.approx(0.5, abs=0.01) for c in tried)
    assert best.score == max(c.score for c in tried)
    assert best.score > tried[0].score, "a tilt keeps more of the decoder than the uniform allocation"
    assert len({tuple(c.kept.values()) for c in tried}) > 1
    assert all(n >= 1 for n in best.kept.values()), "no layer is emptied"


def test_the_pruner_applies_the_chosen_allocation_and_meets_the_target():
    model, evaluated = _model(), []

    def evaluate(m, limit=None):
        evaluated.append(limit)
        return _decoder_share(m)

    before = count_flops(model, X)
    request = PruneRequest(model=model, example_inputs=X, amount=0.5, target=Target("flops", 0.5), evaluate=evaluate,
                           recalibrate=lambda m: None, ignored_layers=output_layers(model), seed=1)
    result = create_pruner("fpgm", search=5, search_images=4).prune(request)
    assert reduction(before, count_flops(result.model, X)) == pytest.approx(0.5, abs=0.01)
    search = result.meta["search"]
    assert channel_counts(result.model) == {**channel_counts(result.model), **search["kept_channels"]}
    assert search["chosen"]["score"] == max(c["score"] for c in search["candidates"])
    assert set(evaluated) == {4}, "candidates are scored on search_images validation images"
    again = create_pruner("fpgm", search=5, search_images=4).prune(PruneRequest(
        model=_model(), example_inputs=X, amount=0.5, target=Target("flops", 0.5), evaluate=evaluate,
        ignored_layers=output_layers(model), seed=1))
    assert again.meta["search"]["kept_channels"] == search["kept_channels"], "the same seed chooses the same widths"
    assert result.meta["round_to"] == 16, "round_to=auto: a FLOP target's candidates in ONNX Runtime's multiples"
    before_counts = channel_counts(_model())
    assert all(n % 16 == 0 for name, n in search["kept_channels"].items() if n != before_counts[name])


def test_a_multiple_no_candidate_can_meet_is_lowered_quietly_under_auto_and_said_when_asked():
    def prune(**options):
        model = _model()
        return create_pruner("fpgm", search=3, search_images=2, **options).prune(PruneRequest(
            model=model, example_inputs=X, amount=0.9, target=Target("flops", 0.9),
            evaluate=lambda m, limit=None: _decoder_share(m), ignored_layers=output_layers(model)))

    quiet, asked = prune(), prune(round_to=16)
    assert quiet.meta["round_to"] < 16 and quiet.meta["warnings"] == []
    assert asked.meta["round_to"] == quiet.meta["round_to"]
    assert asked.meta["warnings"] == [f"round_to=16 cannot reach flops=0.9 on this model: the search rounded to "
                                      f"multiples of {quiet.meta['round_to']} instead"]


def test_the_search_is_refused_where_it_cannot_work():
    with pytest.raises(UsageError, match="drop sensitivity and global_pruning"):
        create_pruner("fpgm", search=4, global_pruning=True)
    with pytest.raises(UsageError, match="search must be"):
        create_pruner("fpgm", search=-1)
    model = _model()
    rate = PruneRequest(model=model, example_inputs=X, amount=0.5, evaluate=lambda m, limit=None: 0.0,
                        ignored_layers=output_layers(model))
    with pytest.raises(UsageError, match="needs a cost target"):
        create_pruner("fpgm", search=4).prune(rate)
    with pytest.raises(PruningError, match="scores candidates"):
        create_pruner("fpgm", search=4).prune(PruneRequest(model=model, example_inputs=X, amount=0.5,
                                                           target=Target("flops", 0.5)))
