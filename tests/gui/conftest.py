"""GUI test fixtures: offscreen Qt, isolated settings, options for the tiny model/encoders.

The tiny model, encoders and the generated ``tile_folder`` come from ``tests/conftest.py``.
"""
from __future__ import annotations

import os
import threading

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from duch_desktop.gui.settings import Settings, use_settings_dir  # noqa: E402
from tests.conftest import CLASSES, PER_CLASS, TinyImageEncoder, TinyTextEncoder  # noqa: E402

N_TILES = len(CLASSES) * PER_CLASS


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory):
    """Default QSettings go to a temp INI file (never the user's real settings)."""
    use_settings_dir(tmp_path_factory.mktemp("qsettings"))


@pytest.fixture
def gui_settings(tmp_path) -> Settings:
    return Settings(QSettings(str(tmp_path / "duch-test.ini"), QSettings.Format.IniFormat))


class Gate:
    """Blocks the image encoder at its call number ``at`` until released: a deterministic slow encoder."""

    def __init__(self, at: int = 2):
        self.at = at
        self.calls = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def check(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            self.release.wait(30)


class GatedImageEncoder(TinyImageEncoder):
    def __init__(self, gate: Gate):
        super().__init__()
        self.gate = gate

    def encode(self, images):
        if len(images) > 1 or np.asarray(images).any():  # the model's probe (one black image) is no batch
            self.gate.check()
        return super().encode(images)


@pytest.fixture
def archive_options(tiny_model_dir):
    """``Archive.open`` options: the tiny bundle (with its captions.json) and tiny encoders."""
    return {"model": tiny_model_dir, "image_encoder": TinyImageEncoder(), "text_encoder": TinyTextEncoder()}


__all__ = ["Gate", "GatedImageEncoder", "N_TILES", "TinyImageEncoder", "TinyTextEncoder"]
