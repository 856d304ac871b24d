"""Small models and synthetic loaders for the engine and handler tests (CPU, a few ms per step).

A uniquely named module (not ``conftest``) so test files can import it directly."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_tiny_model(num_classes: int = 10, bn: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)]
    model = nn.Sequential(*layers)
    model.num_classes = num_classes
    return model


def make_loader(n: int = 32, batch_size: int = 8, num_classes: int = 10, seed: int = 0,
                size: int = 8, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)

