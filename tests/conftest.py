"""Shared fixtures: small benign images only (scikit-image's bundled samples and generated arrays)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A benign RGB photo bundled with scikit-image, downscaled to keep tests fast."""
    from skimage import data, transform

    return (transform.resize(data.astronaut(), (96, 96), anti_aliasing=True) * 255).astype(np.uint8)


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


@pytest.fixture
def red_classifier():
    return RedDetector.build()


@pytest.fixture
def red_scene(photo):
    """The benign photo with a saturated red square planted at a known place (the ground truth)."""
    image = photo.copy()
    truth = np.zeros(image.shape[:2], bool)
    truth[10:34, 56:80] = True
    image[truth] = (255, 0, 0)
    return image, truth
