"""Hand-written scenes shared by the search and baseline tests: a grid of regions and a
classifier whose decision depends only on known pixels, so the right answer is known exactly."""

from __future__ import annotations

import numpy as np


def grid_segments(h: int = 40, w: int = 40, cell: int = 10) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return ((ys // cell) * (w // cell) + xs // cell).astype(np.int32)


def red_predict(key: np.ndarray):
    """Class 1 (unsafe) with probability ≈ the fraction of ``key`` pixels still saturated red, so
    the decision flips (class 0 > 0.5) only when more than half of ``key`` is obfuscated."""

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        red = (batch[:, key, 0] > 200) & (batch[:, key, 1] < 60)
        p = red.mean(axis=1) * 0.98 + 0.01
        return np.stack([1 - p, p], axis=1)

    return predict


class RedDetector:
    """Factory of a hand-built torch classifier whose 'unsafe' logit grows with the fraction of
    saturated red pixels: its decision depends only on where red is, so CSE must find it."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        from safeview.classify import Classifier, Preprocess

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 1, 1)
                self.fc = nn.Linear(1, 2)
                with torch.no_grad():
                    self.conv.weight[:] = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
                    self.conv.bias[:] = -5.0
                    self.fc.weight[:] = torch.tensor([[-100.0], [100.0]])
                    self.fc.bias[:] = torch.tensor([1.0, -1.0])

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

        return Classifier.from_module(
            Net(), ["safe", "unsafe"], ["unsafe"], name="red-detector", category="cyberbullying", preprocess=Preprocess(resize=(64, 64))
        )


class ColourFragmentDetector:
    """Factory of a hand-built torch classifier that keys on a *fragment* of the content: it fires
    when more than ``fraction`` of the image is close to ``colour`` (one colour of a two-colour
    stand-in), so hiding part of that colour flips it while the rest of the content — the other
    colour, the remaining rings — stays visible. The case a minimal flip leaks on."""

    @staticmethod
    def build(colour=(232, 150, 172), *, fraction: float = 0.02, width: float = 0.16, category: str = "sexual"):
        import torch
        from torch import nn

        from safeview.classify import Classifier, Preprocess

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.centre = nn.Conv2d(3, 3, 1)
                self.near = nn.Conv2d(3, 1, 1)
                self.fc = nn.Linear(1, 2)
                with torch.no_grad():
                    self.centre.weight[:] = torch.eye(3).view(3, 3, 1, 1)
                    self.centre.bias[:] = -torch.tensor(colour, dtype=torch.float32) / 255.0
                    self.near.weight[:] = -1.0 / width**2
                    self.near.bias[:] = 1.0
                    self.fc.weight[:] = torch.tensor([[-300.0], [300.0]])
                    self.fc.bias[:] = torch.tensor([300.0 * fraction, -300.0 * fraction])

            def forward(self, x):
                near = torch.relu(self.near(self.centre(x) ** 2))
                return self.fc(near.mean(dim=(2, 3)))

        return Classifier.from_module(
            Net(), ["safe", "unsafe"], ["unsafe"], name="pink-fragment", category=category,
            preprocess=Preprocess(resize=(128, 128), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        )


class FixedDetector:
    """Factory of a torch classifier that gives every image the same ``logits`` (equal ones: a
    probability of exactly 0.5; NaN: a model that fails without raising), or raises ``error``."""

    @staticmethod
    def build(logits=(0.0, 0.0), *, error: Exception | None = None, name: str = "fixed", category: str = "sexual"):
        import torch
        from torch import nn

        from safeview.classify import Classifier, Preprocess

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

            def forward(self, x):
                if error is not None:
                    raise error
                return self.logits.expand(len(x), -1) + 0.0 * x.mean(dim=(1, 2, 3))[:, None]

        return Classifier.from_module(
            Net(), ["safe", "unsafe"], ["unsafe"], name=name, category=category, preprocess=Preprocess(resize=(32, 32))
        )
