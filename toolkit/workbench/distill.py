"""Knowledge distillation from the dense model while a pruned one trains.

The dense model is the teacher (eval mode, no gradients, on the same device).
The student's loss is the task loss plus, as ``kind`` says,

* ``logits`` (default): ``weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
  averaged over pixels (Hinton et al. 2015; ``T^2`` keeps the gradient scale
  independent of the temperature);
* ``features``: ``decoder_weight *`` a pair-wise term on the decoder's output
  (the features the segmentation head reads; Liu et al. 2019, "Structured
  knowledge distillation for semantic segmentation"): the cosine similarity of
  every pair of positions, a (HW x HW) map, compared with the teacher's by
  mean squared error. It compares how positions relate, not channel values,
  so it needs no adapter when pruning has removed decoder channels, and it
  leaves the student's class scores free where logit KL pins them to a teacher
  the student cannot match;
* ``both``: the two terms added;

and, with any kind, ``feature_weight *`` an attention-transfer term on the
encoder's stages (Zagoruyko & Komodakis 2017): each stage's spatial map
``mean_c(f^2)``, normalised, compared with the teacher's (also channel-agnostic).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import UsageError
from toolkit.workbench.heads import output_layers
from toolkit.workbench.settings import KINDS, DistillConfig  # noqa: F401 - re-exported: their old home

AFFINITY_SIDE = 32  # decoder maps larger than this are average-pooled first: the pair map grows as side^4


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Pixel-wise KL divergence between softened class distributions (N, C, H, W), times T^2."""
    t = temperature
    log_p_student = F.log_softmax(student.float() / t, dim=1)
    p_teacher = F.softmax(teacher.float() / t, dim=1)
    kl = (p_teacher * (torch.log(p_teacher.clamp_min(1e-12)) - log_p_student)).sum(dim=1)  # per pixel
    return kl.mean() * t * t


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Where a stage looks: channel-mean of squared activations, flattened and L2-normalised."""
    return F.normalize(feature.float().pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    terms = []
    for s, t in zip(student, teacher):
        if s.dim() != 4 or s.shape[-2:] != t.shape[-2:]:
            continue
        terms.append((attention_map(s) - attention_map(t)).pow(2).mean())
    return torch.stack(terms).mean() if terms else torch.zeros(())


def affinity(feature: torch.Tensor, side: int = AFFINITY_SIDE) -> torch.Tensor:
    """Cosine similarity of every pair of positions of (N, C, H, W) features: (N, HW, HW), any C."""
    f = feature.float()
    if max(f.shape[-2:]) > side:
        f = F.adaptive_avg_pool2d(f, (min(side, f.shape[-2]), min(side, f.shape[-1])))
    f = F.normalize(f.flatten(2), dim=1)  # unit length per position, over channels
    return f.transpose(1, 2) @ f


def pairwise_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two models' position-pair similarities."""
    return (affinity(student) - affinity(teacher)).pow(2).mean()


class _HeadInput:
    """Captures what a model's output layer reads during a forward pass: the decoder's features."""

    def __init__(self, model: nn.Module) -> None:
        heads = output_layers(model)
        if not heads:
            raise UsageError("distill.kind = features needs a model whose output layer is known (the smp architectures)")
        self.features: torch.Tensor | None = None
        self.handle = heads[0].register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple) -> None:
        self.features = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None


class _Features:
    """Captures what a model's ``encoder`` returns during a forward pass (smp models)."""

    def __init__(self, model: nn.Module) -> None:
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise UsageError("distill.feature_weight needs a model with an encoder (the smp architectures)")
        self.features: list[torch.Tensor] = []
        self.handle = encoder.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: object, output: object) -> None:
        self.features = [f for f in output if isinstance(f, torch.Tensor)] if isinstance(output, (list, tuple)) else []


def distillation_objective(
    teacher: nn.Module,
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: DistillConfig,
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``Trainer`` objective ``(student, x, y) -> loss`` that adds the teacher's terms to the task loss."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher_features = _Features(teacher) if cfg.feature_weight > 0 else None
    teacher_decoder = _HeadInput(teacher) if cfg.decoder else None
    hooked: dict[int, tuple[_Features | None, _HeadInput | None]] = {}

    def objective(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if id(student) not in hooked:
            hooked.clear()  # channel surgery may hand us a new student object
            hooked[id(student)] = (_Features(student) if teacher_features else None,
                                   _HeadInput(student) if teacher_decoder else None)
        features, decoder = hooked[id(student)]
        teacher.to(x.device)
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        loss = task_loss(logits, y)
        if cfg.logits:
            loss = loss + cfg.weight * kd_loss(logits, teacher_logits, cfg.temperature)
        if decoder is not None:
            loss = loss + cfg.decoder_weight * pairwise_loss(decoder.features, teacher_decoder.features)
        if features is not None:
            loss = loss + cfg.feature_weight * attention_loss(features.features, teacher_features.features)
        return loss

    return objective
