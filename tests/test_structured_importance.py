"""The channel criteria pick the channels their papers say they pick."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.errors import PruningError, UnknownNameError
from toolkit.plugins import get_registry
from toolkit.pruning import prune_channels
from toolkit.pruning.importances import RandomImportance, TaylorImportance


def two_convs(filters: torch.Tensor) -> nn.Sequential:
    """1x1 conv with the given filters (rows), then the output conv (passed as ignored) that reads them."""
    n, d = filters.shape
    net = nn.Sequential(nn.Conv2d(d, n, 1, bias=False), nn.ReLU(), nn.Conv2d(n, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(filters.view(n, d, 1, 1))
    return net


def kept_rows(before: torch.Tensor, net: nn.Sequential) -> set[int]:
    after = net[0].weight.detach().flatten(1)
    return {i for i, f in enumerate(before) if any(torch.equal(f, g) for g in after)}


# Six filters around (0, 0, 20) at distance 5, and two near that centre. The two
# centre filters are the most replaceable (FPGM), but not the smallest (L2):
# the smallest is (0, 0, 15).
CENTRE = torch.tensor([0.0, 0.0, 20.0])
FILTERS = torch.stack([
    CENTRE + torch.tensor([5.0, 0, 0]), CENTRE - torch.tensor([5.0, 0, 0]),
    CENTRE + torch.tensor([0, 5.0, 0]), CENTRE - torch.tensor([0, 5.0, 0]),
    CENTRE + torch.tensor([0, 0, 5.0]), CENTRE - torch.tensor([0, 0, 5.0]),
    CENTRE + torch.tensor([0.1, 0, 0]), CENTRE + torch.tensor([0, 0.1, 0]),
])


def test_fpgm_removes_the_filters_nearest_the_geometric_median():
    net = two_convs(FILTERS)
    prune_channels(net, torch.randn(1, 3, 4, 4), 0.25, "fpgm", ignored_layers=[net[2]])
    assert kept_rows(FILTERS, net) == {0, 1, 2, 3, 4, 5}


def test_l2_removes_the_smallest_filters():
    net = two_convs(FILTERS)
    prune_channels(net, torch.randn(1, 3, 4, 4), 0.125, "l2", ignored_layers=[net[2]])
    assert 5 not in kept_rows(FILTERS, net)  # (0, 0, 15): norm 15, all others >= 20
    assert len(kept_rows(FILTERS, net)) == 7


def test_l1_and_l2_differ_where_the_norms_do():
    # L1 prefers the spread filter (1, 1, 1): 3 > 2.5; L2 prefers the peaked one: 1.73 < 2.5
    filters = torch.tensor([[1.0, 1.0, 1.0], [2.5, 0.0, 0.0], [4.0, 4.0, 4.0], [5.0, 5.0, 5.0]])
    for name, removed in (("l1", 1), ("l2", 0)):
        net = two_convs(filters)
        prune_channels(net, torch.randn(1, 3, 4, 4), 0.25, name, ignored_layers=[net[2]])
        assert kept_rows(filters, net) == {0, 1, 2, 3} - {removed}, name


def test_fpgm_handles_grouped_convolutions():
    """Torch-Pruning's own FPGMImportance raises on this block (ResNeXt's grouped 3x3)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=8), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 4, 1),
    )
    prune_channels(net, torch.randn(1, 3, 8, 8), 0.5, "fpgm", ignored_layers=[net[-1]])  # the output layer
    grouped = net[3]
    assert grouped.groups == 8 and grouped.in_channels == 16 and grouped.out_channels == 16
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)


def test_taylor_removes_channels_that_do_not_change_the_loss():
    torch.manual_seed(0)
    net = two_convs(torch.randn(8, 3))
    with torch.no_grad():
        net[2].weight[:, :2] = 0.0  # channels 0 and 1 never reach the output: zero gradient
    before = net[0].weight.detach().flatten(1).clone()
    taylor = TaylorImportance()
    x = torch.randn(4, 3, 4, 4)
    for _ in range(3):
        net.zero_grad()
        net(x).pow(2).mean().backward()
        taylor.accumulate(net)
    prune_channels(net, x[:1], 0.25, taylor, ignored_layers=[net[2]])
    assert kept_rows(before, net) == set(range(2, 8))


def test_taylor_without_gradients_says_what_to_do():
    with pytest.raises(PruningError, match="needs gradients"):
        net = two_convs(torch.randn(8, 3))
        prune_channels(net, torch.randn(1, 3, 4, 4), 0.25, TaylorImportance(), ignored_layers=[net[2]])


def test_random_is_seeded():
    picks = []
    for _ in range(2):
        net = two_convs(FILTERS)
        prune_channels(net, torch.randn(1, 3, 4, 4), 0.5, RandomImportance(seed=3), ignored_layers=[net[2]])
        picks.append(kept_rows(FILTERS, net))
    assert picks[0] == picks[1] and len(picks[0]) == 4


def test_random_follows_the_run_seed():
    picks = []
    for seed in (3, 3, 4):
        net = two_convs(FILTERS)
        prune_channels(net, torch.randn(1, 3, 4, 4), 0.5, "random", ignored_layers=[net[2]], seed=seed)
        picks.append(kept_rows(FILTERS, net))
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="fpgm, l1, l2, lamp, random, taylor"):
        prune_channels(two_convs(FILTERS), torch.randn(1, 3, 4, 4), 0.5, "hrank")
    assert {"fpgm", "l1", "l2", "lamp", "random", "taylor"} <= set(get_registry().importances)
