"""A pruner that is slow on purpose, for the executor tests: it writes its process id
(so a test can kill the process running it), sleeps, then zeroes the smallest weights.

It is installed like a third-party plugin because it must be found in child
processes and on Ray workers, where a fixture's registration does not reach.
"""
import os
import time
from pathlib import Path

import torch

from toolkit import Option, PruneRequest, PruneResult, PrunerSpec, hookimpl


class Sleepy:
    def __init__(self, seconds: float, pid_dir: str):
        self.seconds, self.pid_dir = seconds, pid_dir

    def prune(self, request: PruneRequest) -> PruneResult:
        if self.pid_dir:
            Path(self.pid_dir, str(os.getpid())).write_text(str(time.time()))
        time.sleep(self.seconds)
        skip = {id(p) for m in request.ignored_layers for p in m.parameters()}
        weights = {n: p for n, p in request.model.named_parameters() if p.dim() > 1 and id(p) not in skip}
        masks = {}
        with torch.no_grad():
            for name, p in weights.items():
                k = max(1, int(request.amount * p.numel()))
                masks[name] = (p.abs() > p.abs().flatten().kthvalue(k).values).to(p.dtype)
                p.mul_(masks[name])
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        return PruneResult(request.model, "unstructured", "test", zeros / sum(p.numel() for p in weights.values()),
                           masks=masks)


@hookimpl
def register_pruners(register):
    register(PrunerSpec(
        "sleepy", "unstructured", "test", "sleeps, then zeroes the smallest weights of each layer", Sleepy,
        options=(Option("seconds", float, 3600.0, "how long prune() sleeps"),
                 Option("pid_dir", str, "", "folder where prune() writes a file named by its process id")),
    ))
