"""Knowledge distillation from the dense model while a pruned one trains.

The dense model is the teacher (eval mode, no gradients, on the same device).
The student's loss is the task loss plus

* ``weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
  averaged over pixels (Hinton et al. 2015; ``T^2`` keeps the gradient scale
  independent of the temperature), and optionally
* ``feature_weight *`` an attention-transfer term on the encoder's stages
  (Zagoruyko & Komodakis 2017): each stage's spatial map ``mean_c(f^2)``,
  normalised, compared with the teacher's. It needs no projection, so it works
  when pruning has removed channels of the student's stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import UsageError


@dataclass
class DistillConfig:
    """``distill = {enabled = true, temperature = 4, weight = 1}`` in TOML, ``--distill`` on the command line."""

    enabled: bool = False
    temperature: float = 4.0
    weight: float = 1.0
    feature_weight: float = 0.0

    def validate(self) -> "DistillConfig":
        if self.temperature <= 0:
            raise UsageError(f"distill.temperature must be > 0, got {self.temperature}")
        if self.weight < 0 or self.feature_weight < 0:
            raise UsageError("distill weights must be >= 0")
        return self


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
    hooked: dict[int, _Features] = {}

    def objective(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if cfg.feature_weight > 0 and id(student) not in hooked:
            hooked.clear()  # channel surgery may hand us a new student object
            hooked[id(student)] = _Features(student)
        teacher.to(x.device)
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        loss = task_loss(logits, y) + cfg.weight * kd_loss(logits, teacher_logits, cfg.temperature)
        if teacher_features is not None:
            loss = loss + cfg.feature_weight * attention_loss(hooked[id(student)].features, teacher_features.features)
        return loss

    return objective
