"""A third-party plugin with one of each: channel criteria (one reads gradients), a dataset format, an architecture.

The README's "Writing a plugin" examples; the test suite pip-installs it.
"""
from pathlib import Path

import torch
from torch import nn

from toolkit import ChannelImportance, DatasetSpec, ImportanceSpec, Listing, ModelSpec, Record, hookimpl
from toolkit.errors import UsageError


# -- a structured criterion: the toolkit adds the dependency graph, rates, targets, saving ----------
class BNScale(ChannelImportance):
    """Network slimming's criterion (Liu et al. 2017): a channel's |gamma| in the BatchNorm after its conv."""

    layer_types = (nn.BatchNorm2d,)

    def layer_scores(self, layer, idxs):
        return layer.weight.detach().abs()[idxs]


class BNGradient(ChannelImportance):
    """A gradient criterion: a channel's |gamma * dL/dgamma| summed over the backward passes it is given."""

    layer_types = (nn.BatchNorm2d,)
    needs_gradients = True  # the core calls reset(), then accumulate(model) after each backward pass

    def reset(self):
        self.sums, self.batches = {}, 0

    def accumulate(self, model):
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
                score = (m.weight.detach() * m.weight.grad).abs()
                self.sums[m] = self.sums[m] + score if m in self.sums and self.sums[m].shape == score.shape else score
        self.batches += 1

    def layer_scores(self, layer, idxs):
        if not getattr(self, "batches", 0):
            raise RuntimeError("bn_gradient was given no backward passes")
        return self.sums.get(layer, torch.zeros(layer.num_features))[idxs]


@hookimpl
def register_importances(register):
    register(ImportanceSpec("bn_scale", "channels with the smallest BatchNorm scale |gamma| removed",
                            lambda seed=0: BNScale()))
    register(ImportanceSpec("bn_gradient", "channels with the smallest |gamma * dL/dgamma| removed",
                            lambda seed=0: BNGradient()))


# -- a dataset format: list the records, the toolkit reads and checks them ---------------------------
def list_pairs(request):
    """``img_XXX.png`` and ``mask_XXX.png`` (grey class ids) side by side in one folder."""
    images = sorted(request.path.glob("img_*.png"))
    records = [Record(image, image.with_name("mask_" + image.name[len("img_"):])) for image in images]
    return Listing(records, None, ["background", "defect"], f"pairs folder {request.path}")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("pairs", "img_XXX.png + mask_XXX.png in one folder: pairs:PATH", list_pairs,
                         recognise=lambda folder: any(Path(folder).glob("img_*.png"))))


# -- an architecture: built by name, its output layer named --------------------------------------------
def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """Two levels, a skip concatenation and a 1x1 ``head``: small enough for a laptop."""

    def __init__(self, in_channels=3, num_classes=2, width=16):
        super().__init__()
        self.down1, self.down2 = block(in_channels, width), block(width, 2 * width)
        self.up, self.fuse = block(2 * width, width), block(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        a = self.down1(x)
        b = self.down2(nn.functional.max_pool2d(a, 2))
        u = self.up(nn.functional.interpolate(b, scale_factor=2.0, mode="nearest"))
        return self.head(self.fuse(torch.cat([a, u], 1)))


def build_small_unet(encoder, encoder_weights, num_classes, in_channels):
    if encoder_weights is not None:
        raise UsageError("small_unet has no pretrained weights; drop --encoder-weights")
    return SmallUNet(in_channels, num_classes)  # it has no separate encoder: --encoder does not apply


@hookimpl
def register_models(register):
    register(ModelSpec("small_unet", "a two-level U-Net with BatchNorm (sample plugin)", build_small_unet,
                       output_layers=lambda model: [model.head]))
