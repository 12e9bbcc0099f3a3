"""Network definitions used for training (PyTorch)."""

from __future__ import annotations

import torch
from torch import nn

#: Mean and std of FER2013 training pixels (0..1 scale), baked into the networks.
FACE_MEAN, FACE_STD = 0.5077, 0.2550


def _block(cin: int, cout: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return layers


class FaceNet(nn.Module):
    """VGG-style expression classifier: 4 stages of 2 convs (width w, 2w, 4w, 8w).

    Input: grayscale faces as float in 0..255, shape ``(N, 1, 44, 44)``; output: logits.
    """

    def __init__(self, num_classes: int = 7, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(1, w, 2), *_block(w, 2 * w, 2), *_block(2 * w, 4 * w, 2), *_block(4 * w, 8 * w, 2)
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(8 * w, 4 * w), nn.BatchNorm1d(4 * w), nn.ReLU(inplace=True),
            nn.Dropout(dropout / 2), nn.Linear(4 * w, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 - FACE_MEAN) / FACE_STD
        return self.head(self.features(x))


class Softmax(nn.Module):
    """Export wrapper without test-time averaging: softmax of one pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class FlipTTA(nn.Module):
    """Export wrapper: softmax of the logits averaged over the image and its mirror."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x) + self.net(torch.flip(x, dims=[3]))
        return torch.softmax(logits / 2, dim=1)


class TenCropTTA(nn.Module):
    """Export wrapper for 48x48 input: softmax of the logits averaged over the centre and four
    corner ``crop`` x ``crop`` crops and their mirrors (ten views)."""

    def __init__(self, net: nn.Module, crop: int = 44, size: int = 48) -> None:
        super().__init__()
        self.net, self.crop, self.size = net, crop, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.crop, self.size
        o = (s - c) // 2
        views = [x[..., o:o + c, o:o + c], x[..., :c, :c], x[..., :c, s - c:],
                 x[..., s - c:, :c], x[..., s - c:, s - c:]]
        batch = torch.cat(views + [torch.flip(v, dims=[3]) for v in views], dim=0)
        logits = self.net(batch).reshape(10, x.shape[0], -1).mean(0)
        return torch.softmax(logits, dim=1)


class LogitEnsemble(nn.Module):
    """Average the logits of several networks (used as the ``net`` of a TTA wrapper)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(0)
