"""Building blocks shared by the gait networks (model/depthgait.py reads like the paper over these).

Tensors of sequences are (N, C, S, H, W): batch, channels, frames (S for 'set', as in OpenGait), height,
width. 2D layers see every frame independently through `PerFrame`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerFrame(nn.Module):
    """Apply a 2D module to every frame of a (N, C, S, H, W) sequence (OpenGait's SetBlockWrapper)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * s, c, h, w)
        out = self.module(frames)
        return out.reshape(n, s, *out.shape[1:]).transpose(1, 2)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock2D(nn.Module):
    """ResNet basic block on single frames (input (N*S, C, H, W))."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BasicBlockP3D(nn.Module):
    """DeepGaitV2's pseudo-3D block: two per-frame 3x3 convs, with a temporal (3x1x1) convolution added
    as a residual after the first one, so motion is modelled at a fraction of a 3D conv's cost."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = PerFrame(nn.Sequential(conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
        self.temporal = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.temporal_bn = nn.BatchNorm3d(cout)
        self.conv2 = PerFrame(nn.Sequential(conv3x3(cout, cout), nn.BatchNorm2d(cout)))
        self.shortcut = (
            nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False), nn.BatchNorm3d(cout)
            )
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = F.relu(out + self.temporal_bn(self.temporal(out)))
        out = self.conv2(out)
        return F.relu(out + self.shortcut(x))


class BasicBlock3D(nn.Module):
    """Full 3D basic block (DeepGaitV2's '3d' mode)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        st = (1, stride, stride)
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=st, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv3d(cin, cout, 1, stride=st, bias=False), nn.BatchNorm3d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def make_stage(block: str, cin: int, cout: int, blocks: int, stride: int) -> nn.Module:
    """A stage of `blocks` residual blocks; the first one changes channels/resolution.

    As in DeepGaitV2, the first stage is always 2D (motion is cheap to model later, on smaller maps).
    """
    if block == "2d":
        layers = [BasicBlock2D(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(blocks)]
        return PerFrame(nn.Sequential(*layers))
    cls = {"p3d": BasicBlockP3D, "3d": BasicBlock3D}[block]
    return nn.Sequential(*[cls(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(blocks)])


def temporal_max_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, H, W) -> (N, C, H, W): max over frames, so any sequence length works."""
    return x.max(dim=2).values


class HorizontalPyramidPooling(nn.Module):
    """Split the map into `bins` horizontal strips; each strip -> mean + max over its pixels."""

    def __init__(self, bins: int = 16):
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, P)
        n, c = x.shape[:2]
        strips = x.reshape(n, c, self.bins, -1)
        return strips.mean(-1) + strips.max(-1).values


class SeparateFCs(nn.Module):
    """One linear map per part (no weight sharing between body strips)."""

    def __init__(self, parts: int, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(parts, cin, cout))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Cin, P) -> (N, Cout, P)
        return torch.einsum("ncp,pco->nop", x, self.weight)


class SeparateBNNecks(nn.Module):
    """BNNeck per part: BatchNorm over the features, then a cosine classifier (normalised features
    against normalised class weights). The embedding used for retrieval is the *input* to this."""

    def __init__(self, parts: int, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels * parts)
        self.weight = nn.Parameter(torch.empty(parts, channels, num_classes))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (N, C, P)
        n, c, p = x.shape
        feats = self.bn(x.reshape(n, c * p)).reshape(n, c, p)
        logits = torch.einsum(
            "ncp,pck->nkp", F.normalize(feats, dim=1), F.normalize(self.weight, dim=1)
        )
        return feats, logits  # logits: (N, K, P) cosine similarities


def conv_bn_relu_stack(cin: int, cmid: int, cout: int, kernel: int) -> nn.Sequential:
    """1x1 -> kxk -> 1x1 convolutions with Γ = BN(ReLU(·)) between them (the paper's MCF branches)."""
    return nn.Sequential(
        nn.Conv2d(cin, cmid, 1, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cmid),
        nn.Conv2d(cmid, cmid, kernel, padding=kernel // 2, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cmid),
        nn.Conv2d(cmid, cout, 1, bias=False),
    )


class ModalityWeights(nn.Module):
    """Per-position, per-channel softmax weights over the two modalities from F_t = concat(F_s, F_d).

    kernels=(3, 5) is MCF (local + global branch, eqs. 2-4); kernels=(3,) is the single-scale
    attention variant. Output: (N*S, 2, C, H, W), summing to 1 over dim 1.
    """

    def __init__(self, channels: int, reduction: int, kernels: tuple[int, ...]):
        super().__init__()
        mid = max(2 * channels // reduction, 8)
        self.branches = nn.ModuleList(conv_bn_relu_stack(2 * channels, mid, 2 * channels, k) for k in kernels)

    def forward(self, f_t: torch.Tensor) -> torch.Tensor:
        scores = sum(branch(f_t) for branch in self.branches)  # L_S + G_S
        b, c2, h, w = scores.shape
        return torch.softmax(scores.reshape(b, 2, c2 // 2, h, w), dim=1)
