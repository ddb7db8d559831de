"""The structured pruner plugins as a user meets them: ``create_pruner(name).prune(request)``."""
from __future__ import annotations

import itertools

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from toolkit import PruneRequest, create_pruner, list_pruners
from toolkit.contract import check_result
from toolkit.errors import PruningError, UsageError
from toolkit.results.measure import count_flops, count_parameters
from toolkit.workbench.models import output_layers
from toolkit.pruning.prunable import prunable_layers

STRUCTURED = ["fpgm", "l1", "l2", "taylor", "lamp", "random"]
RATE = 0.3



def tiny_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_channels=(32, 32, 16, 16, 16))


def toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, 2, (2, 64, 64), generator=g)


def toy_trainer(x: torch.Tensor, y: torch.Tensor):
    """A real StepTrainer: SGD on one fixed batch of a 2-class segmentation."""

    def train(model, steps, *, optimizer=None, after_backward=None, after_step=None):
        optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        for i in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if after_backward:
                after_backward(model)
            optimizer.step()
            if after_step:
                after_step(model, i)

    return train


def pixel_accuracy(x: torch.Tensor, y: torch.Tensor):
    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        model.eval()
        return float((model(x).argmax(1) == y).float().mean())

    return evaluate


def request_for(model: nn.Module, sparsity: float = RATE, **kw) -> PruneRequest:
    x, y = toy_batch()
    kw.setdefault("train", toy_trainer(x, y))
    return PruneRequest(model=model, example_inputs=x[:1], amount=sparsity, ignored_layers=output_layers(model), **kw)


def test_structured_pruners_are_registered():
    assert set(STRUCTURED) <= set(list_pruners())


@pytest.mark.parametrize("name", STRUCTURED)
def test_pruner_removes_channels_physically(name):
    model = tiny_unet()
    request = request_for(model)
    x = request.example_inputs
    params0, flops0 = count_parameters(model), count_flops(model, x)

    result = check_result(create_pruner(name).prune(request))
    pruned = result.model

    assert (result.kind, result.backend) == ("structured", "torch-pruning")
    assert result.sparsity == pytest.approx(RATE, abs=0.01)
    # channels cut by 30% on both sides of most layers: about half the weights and MACs go
    assert count_parameters(pruned) < 0.6 * params0
    assert count_flops(pruned, x) < 0.6 * flops0
    assert result.meta["params_before"] == params0 and result.meta["params_after"] == count_parameters(pruned)
    assert pruned.segmentation_head[0].out_channels == 2  # the classes are never pruned
    with torch.no_grad():
        assert pruned.eval()(torch.randn(2, 3, 96, 96)).shape == (2, 2, 96, 96)
    assert result.history == [{"step": 1, "amount": RATE, "reached": result.sparsity, "params": count_parameters(pruned),
                               "flops": count_flops(pruned, x), "score": None}]


def test_taylor_needs_a_trainer():
    model = tiny_unet()
    with pytest.raises(PruningError, match="taylor needs training data"):
        create_pruner("taylor").prune(request_for(model, train=None))


def test_taylor_feeds_gradients_without_changing_weights():
    model = tiny_unet()
    before = model.encoder.conv1.weight.detach().clone()
    result = create_pruner("taylor", taylor_steps=2).prune(request_for(model))
    after = result.model.encoder.conv1.weight.detach()
    assert after.shape[0] < before.shape[0]
    # every surviving filter is one of the originals, untouched by the zero-lr backward passes
    for f in after:
        assert any(torch.equal(f, g) for g in before)


def test_a_criterion_declaring_gradients_without_accumulate_is_refused_in_one_line():
    from toolkit import ChannelImportance, ImportanceSpec, hookimpl
    from toolkit.plugins import Registry

    class NoAccumulate(ChannelImportance):
        needs_gradients = True

        def layer_scores(self, layer, idxs):
            return layer.weight.detach().flatten(1)[idxs].norm(dim=1)

    class Plugin:
        @hookimpl
        def register_importances(self, register):
            register(ImportanceSpec("no_accumulate", "declares gradients, cannot take them", lambda seed=0: NoAccumulate()))

    registry = Registry(entry_points=False)
    registry.register(Plugin(), name="no-accumulate")
    assert "taylor_steps" in {o.name for o in registry.get("no_accumulate").spec.options}, "read from its class"
    with pytest.raises(PruningError, match=r"needs gradients but NoAccumulate has no reset\(\) or accumulate\(\)") as err:
        registry.create("no_accumulate").prune(request_for(tiny_unet()))
    assert len(str(err.value).splitlines()) == 1


def test_round_to_keeps_channel_counts_multiples():
    model = tiny_unet()
    dense = {n: m.out_channels for n, m in prunable_layers(model).items()}
    result = create_pruner("l1", round_to=8).prune(request_for(model))
    pruned = {n: m.out_channels for n, m in prunable_layers(result.model).items()}
    shrunk = [n for n in dense if pruned[n] < dense[n]]
    assert shrunk, "nothing was pruned"
    assert all(pruned[n] % 8 == 0 for n in shrunk)
    # each layer keeps the nearest multiple of 8 to 70% of its width, so the rate is near RATE, above or below
    assert result.sparsity == pytest.approx(RATE, abs=0.05)


def test_round_to_with_a_gradient_criterion_rounds_every_group():
    model = tiny_unet()
    dense = {n: m.out_channels for n, m in prunable_layers(model).items()}
    result = create_pruner("taylor", round_to=8, taylor_steps=2).prune(request_for(model))
    pruned = {n: m.out_channels for n, m in prunable_layers(result.model).items()}
    shrunk = [n for n in dense if pruned[n] < dense[n]]
    assert len(shrunk) > len(dense) / 2 and all(pruned[n] % 8 == 0 for n in shrunk)


def test_global_pruning_ranks_across_layers():
    model = tiny_unet()
    dense = {n: m.out_channels for n, m in prunable_layers(model).items()}
    result = create_pruner("fpgm", global_pruning=True).prune(request_for(model))
    pruned = {n: m.out_channels for n, m in prunable_layers(result.model).items()}
    layer_rates = {round(1 - pruned[n] / dense[n], 2) for n in dense}
    assert len(layer_rates) > 3  # not one rate for every layer
    assert 0.1 < result.sparsity < 0.6
    assert result.meta["params_after"] < result.meta["params_before"]


def test_keep_residual_prunes_only_inside_blocks():
    model = tiny_unet()
    result = create_pruner("l2", keep_residual=True).prune(request_for(model))
    enc = result.model.encoder
    assert enc.layer2[0].conv1.out_channels == int(128 * (1 - RATE))  # inside the block: pruned
    assert enc.layer2[0].conv2.out_channels == enc.layer2[0].downsample[0].out_channels == 128  # summed: kept
    assert result.meta["keep_residual"] is True
    with torch.no_grad():
        assert result.model.eval()(request_for(model).example_inputs).shape == (1, 2, 64, 64)


def test_rate_outside_zero_to_one_is_refused():
    with pytest.raises(PruningError, match=r"must lie in \[0, 1\)"):
        create_pruner("l1").prune(request_for(tiny_unet(), sparsity=1.0))


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(UsageError, match="unknown option.*globl.*options: global_pruning"):
        create_pruner("fpgm", globl=True)


def test_score_floor_needs_an_evaluator_and_iterative_mode():
    with pytest.raises(PruningError, match="needs an evaluator"):
        create_pruner("l1", iterative=True, min_score=0.5).prune(request_for(tiny_unet()))
    with pytest.raises(UsageError, match="iterative=true"):
        create_pruner("l1", max_drop=0.1).prune(request_for(tiny_unet()))


def test_iterative_stops_at_the_floor_and_keeps_the_last_good_model():
    model = tiny_unet()
    scores = iter([0.90, 0.89, 0.87, 0.70, 0.95])  # before pruning, then after each step
    trained: list[int] = []

    def train(model, steps, **_):
        trained.append(steps)

    request = request_for(model, sparsity=0.4, train=train, evaluate=lambda m: next(scores),
                          pruning_steps=4, step_interval=3)
    result = create_pruner("l1", iterative=True, max_drop=0.05).prune(request)

    h = result.history
    assert [e["step"] for e in h] == [0, 1, 2, 3]  # step 3 fell below 0.90 - 0.05; step 4 never ran
    assert [e["score"] for e in h] == [0.90, 0.89, 0.87, 0.70]
    assert trained == [3, 3, 3]  # fine-tuned step_interval iterations after each prune
    assert h[0]["params"] > h[1]["params"] > h[2]["params"] > h[3]["params"]
    assert (result.meta["stopped_by"], result.meta["steps_kept"]) == ("floor", 2)
    assert result.meta["score_floor"] == pytest.approx(0.85)
    assert count_parameters(result.model) == h[2]["params"] == result.meta["params_after"]
    assert result.sparsity == pytest.approx(0.2, abs=0.01)  # two of four steps towards 0.4
    with torch.no_grad():
        assert result.model.eval()(request.example_inputs).shape == (1, 2, 64, 64)


def test_iterative_reaches_the_target_while_the_score_holds():
    model = tiny_unet()
    scores = itertools.repeat(0.9)
    request = request_for(model, sparsity=0.4, evaluate=lambda m: next(scores), pruning_steps=4, step_interval=1)
    result = create_pruner("fpgm", iterative=True, min_score=0.8).prune(request)
    assert [round(e["amount"], 2) for e in result.history] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert result.meta["stopped_by"] == "target" and result.model is model
    assert result.sparsity == pytest.approx(0.4, abs=0.01)


def test_iterative_with_real_training_returns_a_model_that_meets_the_floor():
    x, y = toy_batch()
    model = tiny_unet()
    toy_trainer(x, y)(model, 15)  # a little training so the score means something
    evaluate = pixel_accuracy(x, y)
    floor = evaluate(model) - 0.02
    request = request_for(model, sparsity=0.6, evaluate=evaluate, pruning_steps=3, step_interval=3)
    result = create_pruner("fpgm", iterative=True, min_score=floor).prune(request)

    kept = result.history[result.meta["steps_kept"]]
    assert evaluate(result.model) == pytest.approx(kept["score"]) and kept["score"] >= floor
    if result.meta["stopped_by"] == "floor":
        assert result.history[-1]["score"] < floor
    else:
        assert result.sparsity == pytest.approx(0.6, abs=0.01)
    print(f"\nreal iterative run: {[(e['step'], round(e['reached'], 3), round(e['score'], 4)) for e in result.history]}"
          f" floor {floor:.4f}, stopped by {result.meta['stopped_by']}")


def test_a_dense_model_below_the_floor_is_refused():
    request = request_for(tiny_unet(), evaluate=lambda m: 0.3)
    with pytest.raises(PruningError, match="already below the floor"):
        create_pruner("l2", iterative=True, min_score=0.5).prune(request)


@pytest.mark.parametrize("options", [{}, {"round_to": 8}])
def test_narrow_has_the_shape_the_structured_pruners_leave(options):
    """The narrow baseline is the structured pruners' surgery (prune_channels): the same widths as l1's,
    rounding included (cost targets take the same path: test_targets)."""
    widths = {}
    for name in ("narrow", "l1"):
        model = tiny_unet()
        result = create_pruner(name, **options).prune(request_for(model))
        widths[name] = {n: m.out_channels for n, m in prunable_layers(result.model).items()}
        assert result.from_scratch is (name == "narrow")
    assert widths["narrow"] == widths["l1"]
    assert sum(widths["narrow"].values()) < sum(m.out_channels for m in prunable_layers(tiny_unet()).values())
