"""A complete third-party pruner: one-shot global magnitude pruning.

This is the example of the README's "Writing a plugin" section.
"""
import torch

from toolkit import PruneRequest, PruneResult, PrunerSpec, hookimpl


class GlobalMagnitude:
    def prune(self, request: PruneRequest) -> PruneResult:
        skip = {id(p) for m in request.ignored_layers for p in m.parameters()}
        weights = {
            name: p
            for name, p in request.model.named_parameters()
            if p.dim() > 1 and id(p) not in skip
        }
        scores = torch.cat([p.detach().abs().flatten() for p in weights.values()])
        k = int(request.amount * scores.numel())
        threshold = scores.kthvalue(k).values if k > 0 else scores.min() - 1
        masks = {}
        with torch.no_grad():
            for name, p in weights.items():
                masks[name] = (p.abs() > threshold).to(p.dtype)
                p.mul_(masks[name])
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        return PruneResult(
            model=request.model,
            kind="unstructured",
            backend="sample",
            sparsity=zeros / scores.numel(),
            masks=masks,
        )


@hookimpl
def register_pruners(register):
    register(
        PrunerSpec(
            name="sample_magnitude",
            kind="unstructured",
            backend="sample",
            description="one-shot global |w| pruning (sample third-party plugin)",
            factory=GlobalMagnitude,
        )
    )
