"""Fixtures of the attribute tests: the drawn-text scenes, each detected once per session (the OCR
model itself is loaded once per process by the adapter)."""

from __future__ import annotations

import pytest
from text_scenes import draw_text, photo

from safeview.attributes import DETECTORS


@pytest.fixture(scope="session")
def ocr_model():
    """The RapidOCR engine, loaded once for the session (the attributes extra is part of dev)."""
    return DETECTORS["ocr"].load()


@pytest.fixture(scope="session")
def astronaut():
    return photo()


@pytest.fixture(scope="session")
def loser(astronaut):
    """The astronaut with "LOSER" drawn 24 px tall on the left, and the drawn pixels."""
    return draw_text(astronaut, "LOSER", (20, 120), 24)
