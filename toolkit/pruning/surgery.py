"""Graph surgery for structured pruning: physically remove output channels.

**Pruning rate.** A structured pruning rate ``r`` is the fraction of *output
channels* removed from each prunable layer (``toolkit.pruning.prunable``): every
convolution (grouped and depthwise ones included) and linear layer except the
layers that produce the task's classes (``toolkit.workbench.heads.output_layers``: what
the architecture's ``ModelSpec`` names, by default the segmentation head or a
classifier's ``fc``) and layers the caller asks to keep.
Layers that must lose the same channels (a residual sum, a concatenation's
consumer, a depthwise conv and its input, a squeeze-excitation gate) are pruned
as one group at rate ``r``. With ``global_pruning=True`` the rate is instead
reached over all groups together, so some layers lose more and others less
(Torch-Pruning counts a coupled group's channels once there, so the measured
rate, which counts every layer, can differ from the target by a few points).
``round_to=k`` here is Torch-Pruning's own: kept counts rounded *down* to
multiples of ``k`` (a group whose count cannot be rounded that way stays wider
or whole). The structured pruners do not use it: they choose every group's
count themselves, rounded to the nearest multiple (``toolkit.pruning.allocation``)
and pass it as per-layer rates (``rate_dict``).
Channels that come in groups (grouped convs as in ResNeXt, GroupNorm as in
smp's FPN) lose the same number from every group, rounded down (4 a group at
r = 0.4 keep 2).
``keep_residual=True`` leaves channels that layers add together (ResNet's
residual stream) unpruned and prunes only inside blocks, the convention of the
FPGM paper. The rate that is
reported (``PruneResult.sparsity``, ``channel_sparsity``) is *measured* on the
pruned model: ``1 - (remaining output channels) / (original output channels)``
summed over every conv and linear layer but the output layers, the ones kept
whole included (keep_residual, protect): the same count the core makes of any
pruner's result, so a kept layer lowers the reached rate. Removing a fraction ``r`` of the channels of
both a layer's input and output removes about ``1 - (1 - r)**2`` of its weights
and multiply-accumulates (64% at r = 0.4), less where a layer's input comes
from a kept layer (the network's first conv, the head).

**How.** Torch-Pruning's ``DependencyGraph`` traces the model with autograd,
groups coupled layers, and ``BasePruner`` ranks each group's channels with a
criterion from ``toolkit.pruning.importances``; the removal is physical
(smaller weight tensors), so parameters and FLOPs drop and the model runs as is.

**Fixes on top of Torch-Pruning 1.6.**

* *MA-Net hang.* smp's ``PABBlock`` (the MA-Net centre) computes a spatial
  attention map with ``flatten``/``transpose``/``matmul``/``view``/``softmax``
  over the H*W positions. Torch-Pruning's tracer treats ``matmul``, ``transpose``
  and ``softmax`` as channel-wise ops and every ``view`` as a flatten with an
  index stride, so it couples the 64 attention channels, the H*W positions and
  the encoder's last channels in one cycle, doubling the indices at every
  ``view`` (8 -> 16 -> ... -> 512 indices for 8 channels of a 128-channel
  layer). ``get_pruning_group`` then compares ever longer index lists around
  that cycle (``Group.has_pruning_op``), which is where ``MetaPruner`` spins
  for minutes per group and never finishes on full-size inputs; its indices
  also point past the real channel count. We trace the block through a proxy
  forward with the block's real channel couplings (``top_conv`` and
  ``center_conv`` outputs are contracted together; ``bottom_conv`` is added
  to the input; ``out_conv`` reads that sum), and after pruning set the
  block's ``in_channels`` (used in its ``reshape``) from its convs.
* *Grouped-conv FPGM crash*: see ``toolkit.pruning.importances``.
* *ResNeSt split attention* (timm's ``SplitAttn``, radix 2): the block's conv
  gives radix x C channels that are reshaped to (radix, C) and summed, and
  ``fc2``'s attention logits are reshaped to (cardinality, radix, C) and
  transposed before the softmax. Torch-Pruning 1.6 cannot map a channel across
  those reshapes: at r = 0.1 it pruned the conv to 116 channels and ``fc2`` to
  32 in one block, and the model no longer ran. Both layers keep their output
  channels (``split_attention_layers``); their inputs and ``fc1`` are pruned.
  They are about a third of FPN-ResNeSt50's channels, so the reached rate is
  about two thirds of the requested one (0.258 at 0.4).
* Tracing puts the model in eval mode; we restore the caller's mode.
"""
from __future__ import annotations

import contextlib
import types
import warnings
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from toolkit.errors import PruningError
from toolkit.pruning.prunable import PRUNABLE, out_channels, prunable_layers
from toolkit.workbench.heads import output_layers


# -- what counts, and how much was removed -------------------------------------------
def forward_prunable(model: nn.Module, x: torch.Tensor,
                     hook: Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]) -> None:
    """One forward pass of ``model`` (eval, no gradients) with ``hook`` on every conv/linear: how the
    cost model and the latency table see each layer's inputs and outputs."""
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()


def channel_counts(model: nn.Module, ignored: Iterable[nn.Module] = ()) -> dict[str, int]:
    """Output channels of each prunable layer: the ``before`` of ``channel_sparsity``."""
    return {name: out_channels(m) for name, m in prunable_layers(model, ignored).items()}


def channel_sparsity(before: Mapping[str, int], model: nn.Module) -> float:
    """Fraction of the output channels counted in ``before`` that ``model`` no longer has."""
    modules = dict(model.named_modules())
    total = sum(before.values())
    left = sum(out_channels(modules[name]) for name in before if name in modules)
    return 1.0 - left / total if total else 0.0


# -- modules whose forward confuses the tracer ------------------------------------------
def _pab_proxy(block: nn.Module, side: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The channel couplings of smp's PABBlock, without its spatial matmuls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x_center @ x_top sums over the attention channels: both convs lose the same ones.
        side.append(self.top_conv(x) * self.center_conv(x))
        # the attention output (bottom_conv's channels, reshaped) is added to x.
        return self.out_conv(x + self.bottom_conv(x))

    return types.MethodType(forward, block)


def _pab_sync(block: nn.Module) -> None:
    block.in_channels = block.bottom_conv.out_channels
    block.pab_channels = block.top_conv.out_channels


def split_attention_layers(model: nn.Module) -> list[nn.Module]:
    """The convs of timm's split-attention blocks whose output channels are laid out by radix: kept whole."""
    try:
        from timm.layers import SplitAttn
    except ImportError:  # a timm without ResNeSt
        return []
    return [layer for m in model.modules() if isinstance(m, SplitAttn) and m.radix > 1 for layer in (m.conv, m.fc2)]


def _proxies() -> dict[type, tuple[Callable, Callable[[nn.Module], None]]]:
    """Module type -> (proxy forward factory, attribute fix-up after pruning)."""
    try:
        from segmentation_models_pytorch.decoders.manet.decoder import PABBlock
    except ImportError:  # an smp without MA-Net
        return {}
    return {PABBlock: (_pab_proxy, _pab_sync)}


def sync_channel_attributes(model: nn.Module) -> None:
    """Update plain-int channel attributes that a module's forward reads (after pruning or loading)."""
    proxies = _proxies()
    for m in model.modules():
        for kind, (_, sync) in proxies.items():
            if isinstance(m, kind):
                sync(m)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]]:
    """Swap proxy forwards in for tracing; yields the ``forward_fn`` Torch-Pruning should call.

    Proxies return side tensors (e.g. the coupled attention channels) that must
    reach the traced outputs, so ``forward_fn`` returns them with the model output.
    """
    side: list[torch.Tensor] = []
    patched = []
    proxies = _proxies()
    for m in model.modules():
        for kind, (proxy, _) in proxies.items():
            if isinstance(m, kind):
                m.forward = proxy(m, side)
                patched.append(m)

    def forward_fn(net: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
        side.clear()
        out = net(*inputs) if isinstance(inputs, (tuple, list)) else net(inputs)
        return [out, *side]

    try:
        yield forward_fn
    finally:
        for m in patched:
            del m.forward


def residual_layers(graph: tp.DependencyGraph, ignored: Sequence[nn.Module] = ()) -> list[nn.Module]:
    """Layers whose output channels are summed with another layer's (a residual stream).

    These are the groups that hold two or more conv/linear outputs joined by an
    addition: ResNet's ``conv3`` + ``downsample`` stream, FPN's lateral sums.
    Keeping them and pruning only inside blocks is the FPGM paper's convention.
    """
    summed: list[nn.Module] = []
    for group in graph.get_all_groups(ignored_layers=list(ignored), root_module_types=list(PRUNABLE)):
        outputs = [
            dep.target.module for dep, _ in group
            if dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        ]
        added = any(
            dep.target.type == tp.ops.OPTYPE.ELEMENTWISE and "AddBackward" in str(dep.target.module)
            for dep, _ in group
        )
        if added and len(outputs) > 1:
            summed.extend(outputs)
    return summed


# -- the pruning itself --------------------------------------------------------------
def _by_module(model: nn.Module, rates: Mapping[str, float] | None) -> dict[nn.Module, float] | None:
    """Per-layer rates keyed by module name (names survive copying a model) -> by module."""
    if not rates:
        return None
    modules = dict(model.named_modules())
    missing = sorted(set(rates) - set(modules))
    if missing:
        raise PruningError(f"per-layer rates name layers the model does not have: {', '.join(missing[:5])}")
    return {modules[name]: rate for name, rate in rates.items()}


class ChannelSurgery:
    """One dependency graph of ``model``, pruned in ``steps`` equal increments up to ``rate``.

    Pruning happens in place: after each ``step()`` the model's layers are
    physically smaller. Between steps the caller may fine-tune the same model
    object (the graph holds references to its layers, not copies).
    ``keep_residual=True`` leaves summed channels alone (``residual_layers``).
    ``rate_dict`` (layer name -> rate) gives the groups those layers root their
    own rate (how a cost target is met exactly where channel groups make the
    uniform rate jump, and how sensitivity-aware rates are applied);
    ``max_rate`` caps any layer's rate under global ranking.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        rate: float,
        importance: tp.importance.Importance,
        *,
        ignored_layers: Sequence[nn.Module] | None = None,
        global_pruning: bool = False,
        round_to: int | None = None,
        steps: int = 1,
        keep_residual: bool = False,
        rate_dict: Mapping[str, float] | None = None,
        max_rate: float | None = None,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise PruningError(f"a structured pruning rate must lie in [0, 1), got {rate}")
        if steps < 1:
            raise PruningError(f"steps must be at least 1, got {steps}")
        if round_to is not None and round_to < 1:
            raise PruningError(f"round_to must be a positive channel count (e.g. 8), got {round_to}")
        self.model = model
        self.rate = rate
        self.steps = steps
        self.importance = importance
        self.ignored = [*output_layers(model), *(ignored_layers or ()), *split_attention_layers(model)]
        was_training = model.training
        try:
            with traceable(model) as forward_fn, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Torch-Pruning warns about every op it treats as element-wise
                self.pruner = tp.pruner.BasePruner(
                    model,
                    example_inputs,
                    importance=self.importance,
                    pruning_ratio=rate,
                    iterative_steps=steps,
                    ignored_layers=self.ignored,
                    global_pruning=global_pruning,
                    round_to=round_to,
                    pruning_ratio_dict=_by_module(model, rate_dict),
                    max_pruning_ratio=1.0 if max_rate is None else max_rate,
                    forward_fn=forward_fn,
                )
        finally:
            model.train(was_training)
        if keep_residual:
            summed = residual_layers(self.pruner.DG, self.pruner.ignored_layers)
            self.pruner.ignored_layers.extend(summed)  # read at every step
            self.ignored.extend(summed)
        # The rate is counted over every conv/linear layer but the output layers, the
        # layers kept whole included: the same count the core makes of any pruner's result.
        self.before = channel_counts(model)
        self.done = 0

    def coarse_layers(self) -> list[str]:
        """Root layers of groups whose channels come in groups (GroupNorm, grouped convs): their
        rate moves in steps of one channel per group, so a cost can jump as the rate crosses one."""
        names = {m: n for n, m in self.model.named_modules()}
        found = []
        for group in self.pruner.DG.get_all_groups(ignored_layers=self.pruner.ignored_layers,
                                                    root_module_types=self.pruner.root_module_types):
            if self.pruner._get_channel_groups(group) > 1:
                found.append(names[group[0].dep.target.module])
        return found

    @property
    def target_rate(self) -> float:
        """The rate the steps taken so far aim at."""
        return self.rate * self.done / self.steps

    def step(self) -> float:
        """Remove the next increment of channels; returns the measured channel sparsity."""
        if self.done >= self.steps:
            raise PruningError(f"all {self.steps} pruning steps are done")
        self.pruner.step()
        sync_channel_attributes(self.model)
        self.done += 1
        return self.sparsity()

    def sparsity(self) -> float:
        return channel_sparsity(self.before, self.model)
