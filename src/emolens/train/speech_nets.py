"""Speech-emotion networks (PyTorch, training only; inference runs the exported ONNX).

Both take features as ``(N, T, F)`` (frames x feature bins) and return logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time: ``(N, C, T) -> (N, 2C)``."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.attn = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attn(x), dim=2)
        mean = (x * w).sum(dim=2)
        var = ((x * x) * w).sum(dim=2) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=1)


class SpeechCNN(nn.Module):
    """2D CNN on normalised log-mel + attentive statistics pooling over time.

    ``(N, T, n_mels)`` -> 2x time average pooling (20 ms frames) -> 4 blocks of
    conv3x3-BN-ReLU (+ a second conv in the last two blocks), each followed by 2x2 max pooling
    -> mean over frequency -> attentive mean+std pooling over time -> dropout -> linear.
    """

    def __init__(self, num_classes: int = 8, channels: tuple[int, ...] = (16, 32, 64, 128),
                 dropout: float = 0.3, time_pool: int = 2) -> None:
        super().__init__()
        self.time_pool = time_pool
        layers: list[nn.Module] = []
        cin = 1
        for i, c in enumerate(channels):
            n_conv = 2 if i >= len(channels) - 2 else 1
            for j in range(n_conv):
                layers += [nn.Conv2d(cin if j == 0 else c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = c
        self.features = nn.Sequential(*layers)
        self.pool = AttentiveStatsPool(cin)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(1)  # (N, 1, F, T)
        if self.time_pool > 1:
            x = F.avg_pool2d(x, (1, self.time_pool))
        x = self.features(x).mean(dim=2)  # (N, C, T')
        return self.head(self.pool(x))


class MfccCNN1D(nn.Module):
    """Baseline of the earlier kind: MFCC + deltas ``(N, T, 3 * n_mfcc)`` -> three
    Conv1d-BN-ReLU(-MaxPool) layers over time -> global average pooling -> linear.

    Features are standardised with per-dimension training-set statistics stored as buffers.
    """

    def __init__(self, num_features: int = 120, num_classes: int = 8, width: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(
            nn.Conv1d(num_features, width // 2, 5, padding=2), nn.BatchNorm1d(width // 2), nn.ReLU(inplace=True),
            nn.MaxPool1d(2),
            nn.Conv1d(width // 2, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.MaxPool1d(2),
            nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.mean) / self.std).transpose(1, 2)
        return self.head(self.net(x).mean(dim=2))
