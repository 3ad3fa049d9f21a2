"""Plain `nn.Module` networks. They know nothing about training; the LightningModule does.

Their sizes come from the data (`in_features`, `num_outputs`, ...: see conf/model/, which
reads them with `${data_spec:...}`), so one network fits every data set of its kind."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trainlab.checks import ConfigError
from trainlab.models.width import Parametrization


class MLP(nn.Module):
    """Flatten the input (features or an image), then Linear-ReLU blocks and a linear head
    with `num_outputs` outputs (classes, one logit, regression targets).

    Its width is the first hidden size (the others scale with it). Under
    `parametrization="mup"` (trainlab.models.width) the head's input is multiplied by
    base_width / width and its weights keep the base width's init scale; torch's default init
    of the hidden layers (variance ~ 1/fan_in) is already μP's. At the base width, or under
    "sp", it is the standard MLP."""

    def __init__(
        self,
        in_features: int = 64,
        hidden_sizes: Sequence[int] = (256, 256),
        num_outputs: int = 10,
        dropout: float = 0.0,
        parametrization: str = "sp",
        base_width: int | None = None,
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
        if parametrization == "mup" and not hidden_sizes:
            raise ConfigError(
                "parametrization=mup needs a hidden layer, whose width it scales; this MLP has "
                "hidden_sizes=[]: give model.net.hidden_sizes=[256,256], or parametrization=sp."
            )
        if parametrization == "mup" and len(set(hidden_sizes)) > 1:
            raise ConfigError(
                f"parametrization=mup scales the MLP's hidden layers by one width multiplier, "
                f"but model.net.hidden_sizes={list(hidden_sizes)} are of different widths (the "
                "later ones would get the first one's multiplier). Give equal sizes, e.g. "
                f"hidden_sizes=[{hidden_sizes[0]},{hidden_sizes[0]}], or parametrization=sp."
            )
        first = hidden_sizes[0] if hidden_sizes else in_features
        self.parametrization = Parametrization(parametrization, int(first), base_width)
        m = self.parametrization.multiplier
        self.output_multiplier = 1.0 / m
        if m != 1.0:
            with torch.no_grad():  # the base width's scale: torch's default is 1/sqrt(fan_in)
                self.layers[-1].weight.mul_(math.sqrt(m))

    def forward(self, x):
        if self.output_multiplier == 1.0:
            return self.layers(x)
        *body, head = self.layers
        for layer in body:
            x = layer(x)
        return head(x * self.output_multiplier)

    @staticmethod
    def at_width(arguments: dict, factor: float) -> dict:
        """The arguments of this MLP `factor` times as wide (every hidden size scaled)."""
        return {**arguments, "hidden_sizes": [round(h * factor) for h in arguments["hidden_sizes"]]}


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
