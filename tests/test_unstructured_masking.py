"""Criteria and masks on hand-made numbers: what the gradual pruners are built from."""
import pytest
import torch
from torch import nn

from toolkit.pruning.criteria import create_criterion
from toolkit.errors import PruningError, UnknownNameError
from toolkit.pruning.masking import keep_masks, mask_sparsity, masks_from_scores, masks_from_zeros


def _with_grad(w, g):
    p = nn.Parameter(torch.tensor(w))
    p.grad = torch.tensor(g)
    return p


def test_taylor_scores_accumulate_g_times_w_squared_and_restart_after_a_prune():
    p = _with_grad([1.0, -2.0, 0.5], [0.1, 0.1, -4.0])
    taylor = create_criterion("taylor", {"w": p})
    taylor.observe()
    taylor.observe()
    assert torch.allclose(taylor.scores()["w"], 2 * torch.tensor([0.01, 0.04, 4.0]))
    taylor.after_prune()
    assert taylor.scores()["w"].sum() == 0


def test_magnitude_and_taylor_rank_differently():
    # the smallest weight has by far the largest gradient: Taylor keeps it, |w| drops it
    p = _with_grad([1.0, -2.0, 0.5], [0.1, 0.1, -4.0])
    taylor, magnitude = create_criterion("taylor", {"w": p}), create_criterion("magnitude", {"w": p})
    taylor.observe()
    assert masks_from_scores(taylor.scores(), 1 / 3)["w"].tolist() == [False, True, True]
    assert masks_from_scores(magnitude.scores(), 1 / 3)["w"].tolist() == [True, True, False]


def test_movement_scores_are_minus_g_times_w_and_persist_across_prunes():
    p = _with_grad([1.0, -2.0], [0.5, 0.5])  # SGD pulls w0 towards 0, pushes w1 away from 0
    movement = create_criterion("movement", {"w": p})
    movement.observe()
    movement.after_prune()
    movement.observe()
    assert movement.scores()["w"].tolist() == [-1.0, 2.0]


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="magnitude, movement, taylor"):
        create_criterion("fisher", {})


def test_masks_prune_exactly_k_even_when_scores_tie():
    scores = {"a": torch.zeros(10), "b": torch.ones(6)}
    masks = masks_from_scores(scores, 0.5, scope="global")
    assert int((~masks["a"]).sum()) == 8 and masks["b"].all()
    per_layer = masks_from_scores(scores, 0.5, scope="layer")
    assert int((~per_layer["a"]).sum()) == 5 and int((~per_layer["b"]).sum()) == 3


def test_global_scope_ranks_across_layers_and_layer_scope_within_each():
    scores = {"small": torch.tensor([1.0, 2.0, 3.0, 4.0]), "large": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    glob = masks_from_scores(scores, 0.5, scope="global")
    assert glob["small"].tolist() == [False] * 4 and glob["large"].all()
    layer = masks_from_scores(scores, 0.5, scope="layer")
    assert layer["small"].tolist() == [False, False, True, True] == layer["large"].tolist()
    assert mask_sparsity(glob) == mask_sparsity(layer) == 0.5


def test_keep_pruned_makes_masks_monotone():
    first = masks_from_scores({"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}, 0.25)
    # the scores change so the first weight would now survive; it stays pruned
    second = masks_from_scores({"w": torch.tensor([9.0, 2.0, 3.0, 4.0])}, 0.5, keep_pruned=first)
    assert first["w"].tolist() == [False, True, True, True]
    assert second["w"].tolist() == [False, False, True, True]


def _stale_momentum_setup():
    """A layer whose optimiser already has momentum, then half its weights pruned."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 8)
    for _ in range(3):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
    masks = masks_from_scores({"weight": layer.weight.detach().abs()}, 0.5)
    return layer, opt, x, masks


def _train(layer, opt, x, steps=3):
    for _ in range(steps):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()


def test_keep_masks_holds_zeros_through_training_with_stale_momentum():
    layer, opt, x, masks = _stale_momentum_setup()
    before = layer.weight.detach().clone()
    keeper = keep_masks(layer, masks)
    try:
        assert (layer.weight[~masks["weight"]] == 0).all()  # applied at once
        _train(layer, opt, x)
        assert (layer.weight[~masks["weight"]] == 0).all()
        assert not torch.equal(layer.weight[masks["weight"]], before[masks["weight"]])  # the rest trained
    finally:
        keeper.remove()
    _train(layer, opt, x)
    # without the keeper the momentum moves the pruned weights again: the keeper was what held them
    assert (layer.weight[~masks["weight"]] != 0).any()


def test_keep_masks_only_touches_its_own_model():
    layer, opt, x, masks = _stale_momentum_setup()
    other = nn.Linear(8, 8)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with keep_masks(layer, masks):
        with torch.no_grad():
            layer.weight.fill_(1.0)  # someone overwrites the weights; the next step of *another* optimiser
        _train(other, other_opt, x, steps=1)
        assert (layer.weight == 1.0).all()
        _train(layer, opt, x, steps=1)  # this model's step re-applies the masks
        assert (layer.weight[~masks["weight"]] == 0).all()


def test_masks_from_zeros_reads_back_a_pruned_model_and_bad_masks_are_refused():
    layer, _, _, masks = _stale_momentum_setup()
    keep_masks(layer, masks).remove()
    assert torch.equal(masks_from_zeros(layer)["weight"], masks["weight"])
    with pytest.raises(PruningError, match="names no parameter"):
        keep_masks(layer, {"encoder.weight": masks["weight"]})
    with pytest.raises(PruningError, match="shape"):
        keep_masks(layer, {"weight": masks["weight"][:4]})


def test_one_definition_of_prunable_serves_structured_and_unstructured_pruning():
    """The layers whose channels structured pruning may remove are the layers whose weights unstructured
    pruning zeroes and measures: every conv and linear layer but the output head and the kept ones."""
    from toolkit.pruning.prunable import prunable_layers, prunable_weights
    from toolkit.pruning.surgery import channel_counts
    from toolkit.results.measure import sparsity

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv1d(8, 4, 1), nn.ConvTranspose2d(4, 4, 2),
                          nn.Linear(4, 2))
    model.fc = model[4]  # a classifier's output layer: never pruned
    layers = prunable_layers(model, ignored=[model[2]])
    assert list(layers) == ["0", "3"]
    assert list(prunable_weights(model, [model[2]])) == ["0.weight", "3.weight"]
    assert channel_counts(model, [model[2]]) == {"0": 8, "3": 4}
    assert set(masks_from_zeros(model, [model[2]])) == {"0.weight", "3.weight"}
    with torch.no_grad():
        model[3].weight.zero_()  # 4*4*2*2 = 64 of the 8*3*3*3 + 64 = 280 prunable weights
    assert sparsity(model, [model[2]]) == pytest.approx(64 / 280)
    assert list(prunable_weights(nn.Linear(2, 2))) == ["weight"]  # a bare layer: named_parameters' key
