"""Conformance kit: does a pruner keep the toolkit's contract? For a plugin author's own pytest::

    from toolkit.testing import check_pruner

    def test_my_pruner_conforms():
        check_pruner("my_pruner")                       # as registered by my plugin
        check_pruner("my_pruner", {"scope": "global"})  # with options

It runs the pruner the way a cell does (``ignored_layers`` = the model's
output layers, a ``StepTrainer`` and an evaluator) on tiny models at 64 px,
each a case the toolkit's users meet: smp U-Net, FPN (GroupNorm) and MA-Net
(attention) on a 3-stage ResNet-18, and a ResNeXt with grouped convolutions.
For each it checks, in this order, and raises a ``ConformanceError`` naming
the check and the model at the first failure:

* ``prune``/``contract``/``kind``: the pruner runs and returns a
  ``PruneResult`` (``check_result``) of its spec's kind;
* ``runs``/``shape``: the pruned model runs and its output shape is unchanged;
* ``masks`` (unstructured): masks are returned and their zeros are in the weights;
* ``output layers`` (unstructured): no zeros were added to the output layers;
* ``claim``: the rate or zero fraction the pruner claims is what the core
  measures (the measurement a results row reports), within 0.01;
* ``prunes``: something was removed;
* ``save-load``: structured models survive ``save_pruned``/``load_pruned``,
  unstructured ones a ``state_dict`` round trip, with the same outputs;
* ``fine-tune`` (unstructured): the zeros survive a few optimiser steps with
  ``toolkit.pruning.masking.keep_masks``, as in the fine-tune stage;
* ``onnx`` (first model only; skipped without onnx and onnxruntime): the
  exported model gives onnxruntime the outputs PyTorch gives.

Every built-in pruner passes on all four models in a few seconds.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import nn

from toolkit.contract import PruneRequest, PruneResult, check_result
from toolkit.results.measure import sparsity as zero_fraction
from toolkit.workbench.heads import output_layers
from toolkit.workbench.training import run_steps

if TYPE_CHECKING:
    from toolkit.plugins import Registry

SIDE = 64
TOLERANCE = 0.01  # claimed vs measured rate or zero fraction
ModelFactory = Callable[[], nn.Module]


class ConformanceError(AssertionError):
    """A pruner broke the contract: which check, on which model, and what was seen."""

    def __init__(self, pruner: str, check: str, model: str, detail: str) -> None:
        self.pruner, self.check, self.model = pruner, check, model
        super().__init__(f"pruner {pruner!r} fails {check!r} on {model}: {detail}")


# -- tiny models -------------------------------------------------------------------------------
def _three_stages(model: nn.Module) -> nn.Module:
    """An smp model on resnet18 with ``encoder_depth=3`` without the stages it never runs."""
    del model.encoder.layer3, model.encoder.layer4
    return model


def tiny_unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return _three_stages(smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2))


def tiny_fpn() -> nn.Module:
    import segmentation_models_pytorch as smp

    return _three_stages(smp.FPN("resnet18", encoder_weights=None, encoder_depth=3, decoder_pyramid_channels=32,
                                 decoder_segmentation_channels=32, upsampling=1, classes=2))


def tiny_manet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return _three_stages(smp.MAnet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                                   decoder_pab_channels=8, classes=2))


def tiny_resnext() -> nn.Module:
    """ResNeXt blocks (32 groups of 4) in two stages: grouped convs and a residual stream, 0.4M weights."""
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10)
    model.layer3, model.layer4 = nn.Identity(), nn.Identity()
    model.fc = nn.Linear(512, 10)
    return model


TINY_MODELS: dict[str, ModelFactory] = {
    "unet": tiny_unet, "fpn": tiny_fpn, "manet": tiny_manet, "resnext": tiny_resnext,
}


@functools.lru_cache(maxsize=None)
def _dense(factory: ModelFactory) -> nn.Module:
    """Each tiny model built once a process, seeded; callers get copies."""
    torch.manual_seed(0)
    return factory().eval()


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


# -- a tiny StepTrainer and evaluator --------------------------------------------------------------
class SyntheticTrainer:
    """A ``StepTrainer`` on one fixed random batch with a learnable target, and its evaluator.

    Enough for Taylor and movement scores and for the gradual schedules to run;
    the numbers it gives measure cost and size, not accuracy. Cross-entropy for
    multi-class outputs, BCE for a single output channel; classifiers (2-D
    outputs) get random labels. ``score(model)`` is the accuracy on the batch.
    """

    def __init__(self, size: int = SIDE, batch: int = 2, lr: float = 0.01, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 3, size, size, generator=g)
        self.seg_target = (self.x[:, 0] + self.x[:, 1] > 0).long()  # pixels a net can learn
        self.labels = torch.randint(0, 2, (batch,), generator=g)
        self.lr = lr

    def _target(self, out: torch.Tensor) -> torch.Tensor:
        return self.labels % out.shape[1] if out.ndim == 2 else self.seg_target % max(2, out.shape[1])

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        if out.ndim > 2 and out.shape[1] == 1:
            return nn.functional.binary_cross_entropy_with_logits(out[:, 0], self.seg_target.float())
        return nn.functional.cross_entropy(out, self._target(out))

    def __call__(
        self,
        model: nn.Module,
        steps: int,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
    ) -> None:
        optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.5)
        run_steps(model, optimizer, steps, lambda m: self.loss(m(self.x.to(_device(m)))), after_backward, after_step)

    @torch.no_grad()
    def score(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        out = model(self.x.to(_device(model))).cpu()
        model.train(was_training)
        predicted = (out[:, 0] > 0).long() if out.ndim > 2 and out.shape[1] == 1 else out.argmax(1)
        return float((predicted == self._target(out)).float().mean())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- the checks -------------------------------------------------------------------------------------
@dataclass
class Checked:
    """One model a pruner passed on: what it claimed, what the core measured."""

    model: str
    kind: str
    claimed: float
    measured: float
    onnx: bool | None  # checked and passed, or None when not checked (not the first model, or no onnxruntime)
    seconds: float


def check_pruner(
    name: str,
    options: Mapping[str, Any] | None = None,
    models: Sequence[str | ModelFactory] = ("unet", "fpn", "manet", "resnext"),
    *,
    sparsity: float = 0.5,
    onnx: bool = True,
    registry: "Registry | None" = None,
) -> list[Checked]:
    """Run the registered pruner ``name`` on each tiny model and check the contract (see the module).

    ``models`` are names of ``TINY_MODELS`` or factories returning a fresh
    ``nn.Module`` (your own architecture). ``sparsity`` is the request in the
    pruner's own measure. ``onnx`` checks the export on the first model.
    ``registry`` defaults to the installed plugins (``get_registry()``).
    Returns what was measured; raises ``ConformanceError`` at the first failure.
    """
    if registry is None:
        from toolkit.plugins import get_registry

        registry = get_registry()
    spec = registry.get(name).spec
    pruner = spec.create(dict(options or {}))
    checked = []
    for i, entry in enumerate(models):
        label, factory = (entry, TINY_MODELS[entry]) if isinstance(entry, str) else (getattr(entry, "__name__", "model"), entry)
        t0 = time.perf_counter()
        checker = _ModelCheck(name, label, factory, spec.kind)
        claimed, measured = checker.prune(pruner, sparsity)
        checker.survives_saving()
        if spec.kind == "unstructured":
            checker.zeros_survive_finetuning()
        exported = checker.onnx() if onnx and i == 0 else None
        checked.append(Checked(label, spec.kind, claimed, measured, exported, time.perf_counter() - t0))
    return checked


class _ModelCheck:
    """The checks on one model, in order; each failure names itself."""

    def __init__(self, pruner: str, label: str, factory: ModelFactory, kind: str) -> None:
        self.pruner, self.label, self.factory, self.kind = pruner, label, factory, kind
        self.dense = _dense(factory)
        self.x = _inputs()
        with torch.no_grad():
            self.dense_out = self.dense(self.x)
        self.result: PruneResult | None = None

    def fail(self, check: str, detail: str) -> None:
        raise ConformanceError(self.pruner, check, self.label, detail)

    def measure(self, model: nn.Module) -> float:
        """The core's measurement, as ``toolkit.runner.cell`` takes it for a results row."""
        if self.kind == "structured":
            from toolkit.pruning.surgery import channel_counts, channel_sparsity

            return channel_sparsity(channel_counts(self.dense), model)
        return zero_fraction(model, output_layers(model))

    def outputs(self, model: nn.Module) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(self.x)

    def prune(self, pruner: Any, sparsity: float) -> tuple[float, float]:
        model = copy.deepcopy(self.dense)
        trainer = SyntheticTrainer(batch=1)  # one image a step: enough for scores and schedules, half the cost
        request = PruneRequest(model=model, example_inputs=self.x[:1], amount=sparsity, train=trainer,
                               evaluate=trainer.score, ignored_layers=output_layers(model), pruning_steps=2,
                               step_interval=2, seed=0)
        try:
            raw = pruner.prune(request)
        except Exception as exc:  # noqa: BLE001 - any failure is the pruner's
            self.fail("prune", f"raised {type(exc).__name__}: {exc}")
        try:
            result = self.result = check_result(raw)
        except TypeError as exc:
            self.fail("contract", str(exc))
        if result.kind != self.kind:
            self.fail("kind", f"its spec says {self.kind}, its result says {result.kind}")
        try:
            out = self.outputs(result.model)
        except Exception as exc:  # noqa: BLE001
            self.fail("runs", f"the pruned model raises {type(exc).__name__}: {exc}")
        if out.shape != self.dense_out.shape:
            self.fail("shape", f"output {tuple(out.shape)}, the dense model's {tuple(self.dense_out.shape)}")
        if self.kind == "unstructured":
            self.check_masks(result)
        measured = self.measure(result.model)
        if abs(float(result.sparsity) - measured) > TOLERANCE:
            self.fail("claim", f"claims {float(result.sparsity):.4f}, the core measures {measured:.4f}")
        if sparsity > 0 and measured <= 0:
            self.fail("prunes", f"nothing removed at sparsity {sparsity}")
        return float(result.sparsity), measured

    def check_masks(self, result: PruneResult) -> None:
        if not result.masks:
            self.fail("masks", "an unstructured result must return its masks (the fine-tune stage keeps them)")
        params = dict(result.model.named_parameters())
        for key, mask in result.masks.items():
            if key not in params or params[key].shape != mask.shape:
                self.fail("masks", f"mask {key!r} names no parameter of that shape")
            if bool(params[key].detach()[~mask.bool()].ne(0).any()):
                self.fail("masks", f"masked weights of {key!r} are not zero: the zeros must be in the weights")
        heads_before = _zeros(output_layers(self.dense))
        if _zeros(output_layers(result.model)) > heads_before:
            self.fail("output layers", "zeros were added to an output layer (ignored_layers)")

    def survives_saving(self) -> None:
        assert self.result is not None
        model = self.result.model
        expected = self.outputs(model)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.pt"
            if self.kind == "structured":
                from toolkit.pruning.serialize import load_pruned, save_pruned

                try:
                    save_pruned(model, path, recipe={"model": self.label})
                    loaded = load_pruned(path, build=lambda model: copy.deepcopy(self.dense))
                except Exception as exc:  # noqa: BLE001
                    self.fail("save-load", f"save_pruned/load_pruned raise {type(exc).__name__}: {exc}")
            else:
                torch.save(model.state_dict(), path)
                loaded = copy.deepcopy(self.dense)
                try:
                    loaded.load_state_dict(torch.load(path, weights_only=True))
                except Exception as exc:  # noqa: BLE001
                    self.fail("save-load", f"the state_dict does not load into the dense model: {exc}")
        got = self.outputs(loaded)
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            self.fail("save-load", f"outputs differ after loading by up to {float((got - expected).abs().max()):.3g}")

    def zeros_survive_finetuning(self, steps: int = 3) -> None:
        from toolkit.pruning.masking import keep_masks

        assert self.result is not None
        model = self.result.model
        before = self.measure(model)
        keeper = keep_masks(model, self.result.masks)
        try:
            trainer = SyntheticTrainer(batch=1, seed=1)
            trainer(model, steps, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        finally:
            keeper.remove()
        after = self.measure(model)
        if after < before - 1e-9:
            self.fail("fine-tune", f"zero fraction fell from {before:.4f} to {after:.4f} in {steps} steps with "
                                   "keep_masks: the masks do not cover the zeros")

    def onnx(self) -> bool | None:
        if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime as ort

        from toolkit.pruning.export import export_onnx

        assert self.result is not None
        model = self.result.model
        expected = self.outputs(model)
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = export_onnx(model, self.x[:1], Path(folder) / "model.onnx")
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = torch.from_numpy(session.run(None, {"input": self.x.numpy()})[0])
            except Exception as exc:  # noqa: BLE001
                self.fail("onnx", f"export or onnxruntime raises {type(exc).__name__}: {str(exc).splitlines()[0]}")
        scale = max(1.0, float(expected.abs().max()))
        if got.shape != expected.shape or float((got - expected).abs().max()) > 1e-3 * scale:
            self.fail("onnx", "onnxruntime's outputs differ from PyTorch's")
        return True


def _zeros(layers: Sequence[nn.Module]) -> int:
    return sum(int((p == 0).sum()) for layer in layers for p in layer.parameters() if p.dim() > 1)
