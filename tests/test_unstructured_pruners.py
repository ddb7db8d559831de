"""The unstructured pruner plugins (linear, agp, movement, level) as a user calls them.

A toy segmentation net and a StepTrainer on one fixed batch keep each run to a
fraction of a second; one test runs a real smp Unet-resnet18.
"""
import copy

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

import toolkit
from toolkit import PruneRequest
from toolkit.errors import PruningError, UsageError
from toolkit.pruning.masking import keep_masks
from toolkit.results.measure import sparsity
from toolkit.workbench.models import output_layers
from toolkit.pruning.schedules import Schedule



class ToySeg(nn.Module):
    """Encoder, decoder and an smp-style ``segmentation_head``, so ``output_layers`` finds the head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.decoder = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.segmentation_head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


class BatchTrainer:
    """A StepTrainer on one fixed batch: cross-entropy, SGD with momentum by default."""

    def __init__(self, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(2, 3, size, size, generator=g)
        self.y = (self.x[:, 0] + self.x[:, 1] > 0).long()  # a learnable target
        self.steps = 0

    def __call__(self, model, steps, *, optimizer=None, after_backward=None, after_step=None):
        optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        for i in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(self.x), self.y).backward()
            if after_backward:
                after_backward(model)
            optimizer.step()
            self.steps += 1
            if after_step:
                after_step(model, i)


def _request(model, target, trainer=None, steps=4, interval=3):
    return PruneRequest(
        model=model, example_inputs=torch.randn(1, 3, 32, 32), amount=target,
        train=trainer or BatchTrainer(), ignored_layers=output_layers(model),
        pruning_steps=steps, step_interval=interval,
    )


def _prune(name, target, model=None, **options):
    torch.manual_seed(0)
    model = model or ToySeg()
    request = _request(model, target)
    return request, toolkit.create_pruner(name, **options).prune(request)


def _check_plain_model(result, keys_before):
    assert type(result.model) is ToySeg
    assert list(result.model.state_dict()) == keys_before
    assert all("forward" not in m.__dict__ and not hasattr(m, "_nni_wrapper") for m in result.model.modules())


def _check_zeros_survive_finetuning(result):
    pruned = {n: ~m for n, m in result.masks.items()}
    params = dict(result.model.named_parameters())
    head_before = result.model.segmentation_head.weight.detach().clone()
    with keep_masks(result.model, result.masks):
        BatchTrainer(seed=1)(result.model, 5)
    for name, where in pruned.items():
        assert (params[name][where] == 0).all(), name
    assert not torch.equal(result.model.segmentation_head.weight, head_before)  # it did train
    assert sparsity(result.model, output_layers(result.model)) >= result.sparsity


GRADUAL = [("linear", {}), ("agp", {}), ("movement", {}), ("movement", {"warmup_steps": 2, "cooldown_steps": 2})]


@pytest.mark.parametrize("backend", ["toolkit", "nni"])
@pytest.mark.parametrize("target", [0.5, 0.9])
@pytest.mark.parametrize("name,options", GRADUAL, ids=["linear", "agp", "movement", "movement-warm-cool"])
def test_gradual_pruner_reaches_target_and_zeros_survive_finetuning(name, options, target, backend):
    keys = list(ToySeg().state_dict())
    request, result = _prune(name, target, backend=backend, **options)
    assert result.backend == backend and result.kind == "unstructured"
    assert abs(result.sparsity - target) <= 0.01
    assert result.sparsity == sparsity(result.model, output_layers(result.model))
    assert (result.model.segmentation_head.weight != 0).all()  # the head is never pruned
    _check_plain_model(result, keys)
    warmup, cooldown = options.get("warmup_steps", 0), options.get("cooldown_steps", 0)
    assert request.train.steps == warmup + 4 * 3 + cooldown
    assert [h["iteration"] for h in result.history] == [warmup + 3 * k for k in (1, 2, 3, 4)]
    assert result.history[-1]["amount"] == pytest.approx(target)
    assert all(abs(h["reached"] - h["amount"]) <= 0.01 for h in result.history)
    _check_zeros_survive_finetuning(result)


@pytest.mark.parametrize("name,shape", [("linear", "linear"), ("agp", "cubic")])
def test_history_follows_the_schedule(name, shape):
    _, result = _prune(name, 0.8, initial_sparsity=0.2)
    expected = Schedule(shape, 0.8, 4, 3, initial=0.2)
    assert [h["amount"] for h in result.history] == pytest.approx([expected.at(t) for t in (3, 6, 9, 12)])
    assert [h["reached"] for h in result.history] == pytest.approx([expected.at(t) for t in (3, 6, 9, 12)], abs=0.01)


@pytest.mark.parametrize("backend", ["nni", "toolkit"])
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_level_prunes_the_smallest_weights_in_one_shot(target, backend):
    model = ToySeg()
    keys = list(model.state_dict())
    magnitudes = {n: p.detach().abs().clone() for n, p in model.named_parameters()}
    request = PruneRequest(model=model, example_inputs=torch.randn(1, 3, 32, 32), amount=target)
    result = toolkit.create_pruner("level", backend=backend).prune(request)
    assert result.backend == backend
    assert abs(result.sparsity - target) <= 0.01
    assert "segmentation_head.weight" not in result.masks  # left out though the request named no ignored layers
    for name, mask in result.masks.items():  # per layer: every kept weight outweighs every pruned one
        assert magnitudes[name][mask].min() > magnitudes[name][~mask].max()
    _check_plain_model(result, keys)
    _check_zeros_survive_finetuning(result)


def test_nni_and_toolkit_level_agree():
    model = ToySeg()
    # 0.75 of every layer is a whole number of weights: NNI floors the count, we round it
    request = lambda m: PruneRequest(model=m, example_inputs=torch.randn(1, 3, 32, 32), amount=0.75)  # noqa: E731
    nni = toolkit.create_pruner("level", backend="nni").prune(request(copy.deepcopy(model)))
    ours = toolkit.create_pruner("level", backend="toolkit").prune(request(copy.deepcopy(model)))
    assert nni.masks.keys() == ours.masks.keys()
    assert all(torch.equal(nni.masks[n], ours.masks[n]) for n in ours.masks)


@pytest.mark.parametrize("name", ["linear", "agp"])
def test_taylor_and_magnitude_choose_different_weights(name):
    model = ToySeg()
    _, taylor = _prune(name, 0.5, copy.deepcopy(model), criterion="taylor")
    _, magnitude = _prune(name, 0.5, copy.deepcopy(model), criterion="magnitude")
    assert taylor.meta["criterion"] == "taylor" and magnitude.meta["criterion"] == "magnitude"
    assert abs(taylor.sparsity - 0.5) <= 0.01 and abs(magnitude.sparsity - 0.5) <= 0.01
    differ = sum(int((taylor.masks[n] != magnitude.masks[n]).sum()) for n in taylor.masks)
    total = sum(m.numel() for m in taylor.masks.values())
    assert differ / total > 0.05  # not a few ties: a different selection


@pytest.mark.parametrize("backend", ["toolkit", "nni"])
def test_global_scope_lets_layers_differ_layer_scope_does_not(backend):
    per_layer = lambda r: [float((~m).float().mean()) for m in r.masks.values()]  # noqa: E731
    _, glob = _prune("agp", 0.8, scope="global", backend=backend)
    _, layer = _prune("agp", 0.8, scope="layer", backend=backend)
    assert abs(glob.sparsity - 0.8) <= 0.01 and abs(layer.sparsity - 0.8) <= 0.01
    assert max(per_layer(layer)) - min(per_layer(layer)) < 0.01
    assert max(per_layer(glob)) - min(per_layer(glob)) > 0.05


def test_registry_builds_agp_with_magnitude_from_the_entry_point_plugin():
    registered = toolkit.get_registry().get("agp")
    assert registered.plugin == "nni" and registered.spec.kind == "unstructured"
    assert {"linear", "agp", "movement", "level"} <= set(toolkit.list_pruners())
    pruner = toolkit.create_pruner("agp", criterion="magnitude")
    result = pruner.prune(_request(ToySeg(), 0.9))
    assert result.meta["criterion"] == "magnitude" and result.meta["schedule"] == "cubic"
    assert abs(result.sparsity - 0.9) <= 0.01


def test_user_errors_say_what_to_do():
    with pytest.raises(UsageError, match="criterion' of pruner 'agp' must be one of taylor, magnitude"):
        toolkit.create_pruner("agp", criterion="fisher")
    with pytest.raises(UsageError, match="options: "):
        toolkit.create_pruner("level", warmup_steps=3)
    with pytest.raises(UsageError, match="backend"):
        toolkit.create_pruner("linear", backend="tf")
    no_trainer = PruneRequest(model=ToySeg(), example_inputs=torch.randn(1, 3, 32, 32), amount=0.5)
    with pytest.raises(PruningError, match="StepTrainer"):
        toolkit.create_pruner("agp").prune(no_trainer)
    with pytest.raises(PruningError, match="backend='toolkit'"):
        toolkit.create_pruner("linear", backend="nni", initial_sparsity=0.1).prune(_request(ToySeg(), 0.5))


def test_a_trainer_that_skips_steps_is_caught():
    class Lazy(BatchTrainer):
        def __call__(self, model, steps, **kwargs):
            super().__call__(model, steps - 1, **kwargs)

    with pytest.raises(PruningError, match="ran 11 of the 12 steps"):
        toolkit.create_pruner("agp").prune(_request(ToySeg(), 0.5, trainer=Lazy()))


def _small_unet():
    """The real smp class, shrunk to keep the test quick. With ``encoder_depth=3`` smp keeps
    the resnet's ``layer4`` but never runs it: weights that get no gradient."""
    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2)


@pytest.mark.parametrize("name,backend", [("agp", "toolkit"), ("level", "nni")])
def test_on_an_smp_unet_the_result_is_a_plain_unet(name, backend):
    model = _small_unet()
    keys = list(model.state_dict())
    result = toolkit.create_pruner(name, backend=backend).prune(_request(model, 0.9, steps=2, interval=1))
    assert type(result.model) is smp.Unet and list(result.model.state_dict()) == keys
    assert all("forward" not in m.__dict__ and not hasattr(m, "_nni_wrapper") for m in result.model.modules())
    assert abs(result.sparsity - 0.9) <= 0.01
    assert (result.model.segmentation_head[0].weight != 0).all()
    assert "segmentation_head.0.weight" not in result.masks


def test_nni_taylor_on_weights_without_gradients_is_a_clear_error():
    with pytest.raises(PruningError, match="no gradient.*backend='toolkit'"):
        toolkit.create_pruner("agp", backend="nni").prune(_request(_small_unet(), 0.9, steps=2, interval=1))
