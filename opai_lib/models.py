"""Model registry and the one definition of what can be pruned.

CIFAR models take 32x32 inputs; ImageNet models are torchvision's. Every model is built
from a seed, so the same seed gives the same initial weights. ``prunable(model)`` is the
only place that decides which tensors a criterion may score and a mask may zero.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from opai_lib.config import check_integer, check_parameter
from opai_lib.registry import Registry

# ---------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2): 6n+2 layers, widths 16/32/64.


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by the stride, zero-pad the new channels. No weights."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, planes - in_planes

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def projection_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Option-B shortcut (open_lth, Synaptic-Flow): a 1x1 convolution and BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
    )


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            make = ZeroPadShortcut if shortcut == "A" else projection_shortcut
            self.shortcut = make(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 images. Key names match akamaster/pytorch_resnet_cifar10."""

    def __init__(self, depth: int, num_classes: int = 10, width: float = 1.0, shortcut="A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [max(1, round(w * width)) for w in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes, stages = widths[0], []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------------------
# VGG with BatchNorm for CIFAR (the open_lth / GraSP plan: four max-pools, then a global
# average pool and one linear layer).

VGG_PLANS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        layers, in_ch = [], 3
        for v in VGG_PLANS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out_ch = max(1, round(v * width))
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class TinyConvNet(nn.Module):
    """Two convolutions and a linear head: small enough for exact checks in tests."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        c = max(1, round(8 * width))
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.fc = nn.Linear(2 * c, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions and linear layers, zero biases, BatchNorm at (1, 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------
# The registry. A builder takes (num_classes, width) and returns an uninitialised model.

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _depth in (20, 32, 44, 56, 110):
    MODELS.add(f"resnet{_depth}", lambda nc, w, d=_depth: CifarResNet(d, nc, w, shortcut="A"))
    MODELS.add(f"resnet{_depth}_proj",
               lambda nc, w, d=_depth: CifarResNet(d, nc, w, shortcut="B"))
MODELS.add("vgg16_bn", lambda nc, w: CifarVGG(16, nc, w))
MODELS.add("vgg19_bn", lambda nc, w: CifarVGG(19, nc, w))
MODELS.add("tiny", lambda nc, w: TinyConvNet(nc, w))


def _torchvision(arch: str):
    def build(num_classes: int, width: float) -> nn.Module:
        import torchvision

        if width != 1.0:
            raise ValueError(f"{arch} is torchvision's ImageNet model; width must be 1.0")
        return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)

    return build


# torchvision's ImageNet ResNets (7x7 stem, bottlenecks in ResNet-50: the DOP paper's model),
# initialised by torchvision; the CIFAR ResNets above are resnet20 to resnet110.
TORCHVISION_MODELS = ("resnet18", "resnet50")
for _arch in TORCHVISION_MODELS:
    MODELS.add(_arch, _torchvision(_arch))


def get_model(name: str, num_classes: int = 10, width: float = 1.0, seed: int = 0) -> nn.Module:
    """Build model ``name`` with weights drawn from ``seed`` (the global RNG is untouched)."""
    builder = MODELS.get(name)
    check_parameter(isinstance(width, (int, float)) and not isinstance(width, bool)
                    and math.isfinite(width) and width > 0, "width", width,
                    "a finite number > 0 (the width multiplier)")
    check_integer("num_classes", num_classes, 2)
    check_integer("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(num_classes, float(width))
        if name not in TORCHVISION_MODELS:
            init_weights(model)
    return model


# ---------------------------------------------------------------------------------------
# Pretrained CIFAR-10 ResNets (akamaster/pytorch_resnet_cifar10, see data/README.md).

PRETRAINED = {
    "resnet20": ("resnet20-12fca82f.th",
                 "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    "resnet32": ("resnet32-d509ac18.th",
                 "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
    "resnet44": ("resnet44-014dd654.th",
                 "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
    "resnet56": ("resnet56-4bfd9763.th",
                 "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
}
# Inputs of the pretrained checkpoints were normalised with ImageNet statistics.
PRETRAINED_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _published_checkpoint(name: str, directory: str | Path | None = None) -> dict:
    """The published checkpoint of ``name`` (``PRETRAINED``), checksum verified."""
    from opai_lib.data import shared_data_dir, verify_sha256

    if name not in PRETRAINED:
        raise ValueError(f"no pretrained weights for {name!r}; available: {sorted(PRETRAINED)}")
    fname, sha = PRETRAINED[name]
    directory = Path(directory) if directory else shared_data_dir() / "pretrained/cifar10-resnet"
    path = directory / fname
    if not path.exists():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} not found; put {fname} from "
            "github.com/akamaster/pytorch_resnet_cifar10 there or pass `directory`")
    verify_sha256(path, sha)
    return torch.load(path, map_location="cpu")


def load_pretrained(name: str, directory: str | Path | None = None) -> nn.Module:
    """A CIFAR-10 ResNet with the published weights, checksum verified."""
    state = _published_checkpoint(name, directory)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = get_model(name)
    model.load_state_dict(state)
    return model


def published_accuracy(name: str, directory: str | Path | None = None) -> float:
    """The test accuracy (%) the weights' author stored in the checkpoint (``best_prec1``),
    measured on the original lossless CIFAR-10 test set, not on this study's JPEG copy."""
    return float(_published_checkpoint(name, directory)["best_prec1"])


# ---------------------------------------------------------------------------------------
# What can be pruned.


def prunable(model: nn.Module, first_layer: bool = True, last_layer: bool = True
             ) -> dict[str, nn.Parameter]:
    """The weights a criterion scores and a mask zeroes: every conv and linear weight.

    Biases and BatchNorm parameters are never pruned. ``first_layer=False`` keeps the
    first conv/linear layer dense and ``last_layer=False`` the last one (the classifier),
    as several reference codes do.
    """
    names = [f"{n}.weight" for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not names:
        raise ValueError(f"{type(model).__name__} has no convolution or linear layer to prune")
    keep = set(names[int(not first_layer): len(names) - int(not last_layer)])
    return {n: p for n, p in model.named_parameters() if n in keep}


def io_sizes(model: nn.Module) -> tuple[int | None, int | None]:
    """(input channels of the first convolution, outputs of the last linear layer), found
    from the modules so inputs and labels can be checked before any compute; None where the
    model has no such layer (or a lazy one)."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    channels = convs[0].in_channels if convs and convs[0].in_channels else None
    outputs = linears[-1].out_features if linears and linears[-1].out_features else None
    return channels, outputs


@torch.no_grad()
def stages(model: nn.Module, image_size: int = 32) -> dict[str, str]:
    """The stage of every prunable tensor: ``stage<k>`` for the k-th feature-map resolution
    (largest first; a ResNet's stem joins its first stage, a strided block the stage it
    produces), ``head`` for linear layers. Found by one forward pass of a zero image on a
    copy, so it holds for any convolutional net."""
    net = copy.deepcopy(model).eval()
    sizes: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: sizes.__setitem__(n, out.shape[-1]))
             for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    channels = io_sizes(net)[0] or 3
    param = next(net.parameters())
    net(torch.zeros(1, channels, image_size, image_size, dtype=param.dtype, device=param.device))
    for h in hooks:
        h.remove()
    order = sorted(set(sizes.values()), reverse=True)
    out = {}
    for name in prunable(model):
        module = name.removesuffix(".weight")
        out[name] = f"stage{order.index(sizes[module]) + 1}" if module in sizes else "head"
    return out
