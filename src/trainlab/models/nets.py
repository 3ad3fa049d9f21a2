"""Plain `nn.Module` networks. They know nothing about training; the LightningModule does.

Their sizes come from the data (`in_features`, `num_outputs`, ...: see conf/model/, which
reads them with `${data_spec:...}`), so one network fits every data set of its kind."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Module):
    """Flatten the input (features or an image), then Linear-ReLU blocks and a linear head
    with `num_outputs` outputs (classes, one logit, regression targets)."""

    def __init__(
        self,
        in_features: int = 64,
        hidden_sizes: Sequence[int] = (256, 256),
        num_outputs: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class CNN(nn.Module):
    """Two conv-BatchNorm-ReLU blocks, one max-pool, then a small head with `num_outputs`
    outputs; for square images of `in_channels` x `image_size` x `image_size`."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        num_outputs: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            width = out
        layers.append(nn.MaxPool2d(2))
        pooled = image_size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * pooled * pooled, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_outputs),
        )

    def forward(self, x):
        return self.head(self.features(x))
