"""Tools ▸ Train Model…: train DUCH hash heads on one's own captioned tiles, as ``duch train``
does (the same job: features with the on-disk cache, training, bundle + captions.json), with
progress, ETA and cancel; when it is done, offer the new model for the open folder.

A cancelled or failed run leaves no bundle behind; the feature cache keeps what was extracted,
so a second run starts where the first one stopped extracting.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QSpinBox, QWidget)

from duch_desktop.core.jobs import Job, Progress, UserError
from duch_desktop.core.model.inference import check_bits
from duch_desktop.core.training.job import RECIPES

from .panels import format_duration, vbox
from .workers import JobWorker

RECIPE_LABELS = {"paper": "paper (DUCH's loss terms; small caption sets)",
                 "contrastive": "contrastive (the shipped model's; many distinct captions)"}
SHOWN_LOSSES = ("inter", "intra_image", "intra_text")  # the NT-Xent terms; the total includes the rest
STAGES = {"image features": "Extracting image features (the slow part; cached for later runs)",
          "text features": "Encoding the captions", "features": "Extracting features",
          "train": "Training", "save": "Saving the model", "load": "Loading the encoders"}


def training_job(options: SimpleNamespace, encoders: Callable[[], tuple] | None = None) -> Job[dict]:
    """The training job ``duch train`` drives (``core.training.job.train_job``) after loading the encoders in the
    worker thread (seconds); ``encoders()`` -> (image, text) replaces the default ones."""
    from duch_desktop.core.training.job import train_job

    yield Progress("load", 0, 0, "loading the encoders")
    image_encoder, text_encoder = encoders() if encoders is not None else default_encoders()
    return (yield from train_job(options, image_encoder, text_encoder))


def default_encoders() -> tuple:
    """The encoders `duch train` uses when given no encoder options."""
    from duch_desktop.core.model.encoders import DEFAULT_TEXT_POOLING, load_image_encoder, load_text_encoder

    return load_image_encoder(None, None), load_text_encoder(None, None, pooling=DEFAULT_TEXT_POOLING)


def train_options(folder: str, captions: str, bits: int, epochs: int, out: str, recipe: str = "paper") -> SimpleNamespace:
    """``duch train FOLDER --captions FILE --bits B --epochs E --out DIR --recipe R`` as the job takes it;
    UserError (the CLI's words) for values it would refuse."""
    folder_path = Path(folder).expanduser()
    if not folder or not folder_path.is_dir():
        raise UserError(f"folder not found: {folder or '(none chosen)'}")
    check_bits(bits, "the code length")
    if not out:
        raise UserError("choose an output folder for the new model")
    if captions and not Path(captions).expanduser().is_file():
        raise UserError(f"captions file not found: {captions}")
    return SimpleNamespace(source=folder_path, captions=Path(captions).expanduser() if captions else None,
                           bits=int(bits), epochs=int(epochs), out=Path(out).expanduser(), all_images=False,
                           fp16=True, image_encoder=None, text_encoder=None, text_pooling=None, cache_dir=None,
                           device=None, seed=42, workers=1, recipe=recipe)


def progress_line(event: Progress, started: float, now: float | None = None) -> str:
    """'Training · epoch 12/100 · loss 1.234 (inter 0.52, …) · ETA 3:21'."""
    now = time.monotonic() if now is None else now
    parts = [STAGES.get(event.stage, event.stage.capitalize())]
    info = event.info or {}
    if event.stage == "train" and info.get("epoch"):
        parts.append(event.message.split(":")[0])
        losses = info.get("losses") or {}
        if losses:
            total = losses.get("total", losses.get("loss"))
            terms = ", ".join(f"{k.replace('_', '-')} {losses[k]:.3f}" for k in SHOWN_LOSSES if k in losses)
            parts.append((f"loss {total:.3f}" if total is not None else "losses") + (f" ({terms})" if terms else ""))
        elif "val" in info:
            parts.append(f"held-out NT-Xent {-float(info['val']):.3f}")
    elif event.total:
        parts.append(f"{event.done:,} / {event.total:,}")
    if event.total and 0 < event.done < event.total and now > started:
        parts.append(f"ETA {format_duration((now - started) / event.done * (event.total - event.done))}")
    return " · ".join(parts)


class TrainDialog(QDialog):
    """Folder, captions file, bits, epochs, output folder; Train, progress, Cancel; Use for This Index."""

    use_model = Signal(str)  # the bundle folder of a finished run, to use for the open folder
    finished_training = Signal(dict)
    failed_training = Signal(str)

    def __init__(self, folder: str = "", out_dir: str = "", can_use: bool = False,
                 encoders: Callable[[], tuple] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Train a Model")
        self.encoders = encoders
        self.can_use = can_use
        self.worker: JobWorker | None = None
        self.bundle: str | None = None
        self._stage_started: dict[str, float] = {}
        self.folder = QLineEdit(folder)
        self.captions = QLineEdit()
        self.captions.setPlaceholderText("captions.csv or captions.json in the folder")
        self.bits = QSpinBox()
        self.bits.setRange(8, 1024)
        self.bits.setSingleStep(8)
        self.bits.setValue(64)
        self.bits.setSuffix(" bits")
        self.recipe = QComboBox()
        for name, label in RECIPE_LABELS.items():
            self.recipe.addItem(label, name)
        self.recipe.setToolTip("paper: the DUCH paper's loss terms and options. contrastive: the shipped model's, "
                               "for large collections with many distinct captions (docs/rsicd.md)")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10000)
        self.epochs.setValue(RECIPES["paper"]["epochs"])
        # Each recipe has its own number of epochs (the user may still change it afterwards).
        self.recipe.currentIndexChanged.connect(
            lambda _i: self.epochs.setValue(RECIPES[self.recipe.currentData()]["epochs"]))
        self.out = QLineEdit(out_dir)
        form = QFormLayout()
        form.addRow("Tiles:", _with_browse(self.folder, lambda: self._browse_dir(self.folder, "Folder of tiles")))
        form.addRow("Captions file:", _with_browse(self.captions, self._browse_captions))
        form.addRow("Code length:", self.bits)
        form.addRow("Recipe:", self.recipe)
        form.addRow("Epochs:", self.epochs)
        form.addRow("Save the model in:", _with_browse(self.out, lambda: self._browse_dir(self.out, "Output folder")))
        intro = QLabel("DUCH learns from image–caption pairs, without class labels. Give a folder of tiles and a "
                       "captions file: CSV (file,caption — several rows per file allowed) or JSON "
                       "({\"file\": [\"caption\", …]}). Tiles without a caption are left out of training. "
                       "The same job as `duch train`.")
        intro.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.train_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.clicked.connect(self._cancel_or_close)
        self.use_button = QPushButton("Use for This Index")
        self.use_button.setToolTip("Index the open folder again with the new model")
        self.use_button.setVisible(False)
        self.use_button.clicked.connect(lambda: self.bundle and self.use_model.emit(self.bundle))
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.use_button, self.train_button, self.cancel_button):
            buttons.addWidget(b)
        vbox(self, intro, form, self.bar, self.status, buttons)
        self.resize(560, self.sizeHint().height())

    # ------------------------------------------------------------------ running
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running()

    def start(self) -> bool:
        if self.running():
            return False
        try:
            options = train_options(self.folder.text().strip(), self.captions.text().strip(), self.bits.value(),
                                    self.epochs.value(), self.out.text().strip(), self.recipe.currentData())
        except UserError as e:
            self._say(f"Cannot train: {e}.", error=True)
            return False
        self.bundle = None
        self.use_button.setVisible(False)
        self._stage_started = {}
        encoders = self.encoders
        self.worker = JobWorker(lambda: training_job(options, encoders), self, min_interval=0.2)
        self.worker.progress.connect(self._progress)
        self.worker.finished.connect(self._finished)
        self.worker.failed.connect(self._failed)
        self.worker.cancelled.connect(lambda _v: self._say("Training cancelled; no model was saved. The features "
                                                           "extracted so far are cached for the next run."))
        self.worker.done.connect(self._ended)
        self._set_running(True)
        self._say("Starting…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        if self.running():
            self.worker.cancel()
            self.cancel_button.setEnabled(False)
            self._say("Cancelling… (after the current step)")

    def _cancel_or_close(self) -> None:
        if self.running():
            self.cancel()
        else:
            self.close()

    def closeEvent(self, event) -> None:
        if self.running():  # the job stops at its next step; the dialog closes then
            self.cancel()
            self.worker.done.connect(self.close)
            event.ignore()
            return
        super().closeEvent(event)

    def _progress(self, event: Progress) -> None:
        started = self._stage_started.setdefault(event.stage, time.monotonic())
        self.bar.setRange(0, event.total or 0)
        if event.total:
            self.bar.setValue(min(event.done, event.total))
        self._say(progress_line(event, started))

    def _finished(self, summary: dict) -> None:
        self.bundle = str(summary.get("bundle"))
        self._say(f"Saved the model in {self.bundle} ({summary.get('bits')} bits, trained on "
                  f"{summary.get('source')}; best epoch {summary.get('best_epoch')}).")
        self.use_button.setVisible(self.can_use)
        self.finished_training.emit(summary)

    def _failed(self, message: str) -> None:
        self._say(f"Training stopped: {message}", error=True)
        self.failed_training.emit(message)

    def _ended(self) -> None:
        self.worker = None
        self._set_running(False)

    def _set_running(self, on: bool) -> None:
        for w in (self.folder, self.captions, self.bits, self.recipe, self.epochs, self.out, self.train_button):
            w.setEnabled(not on)
        self.bar.setVisible(on or self.bar.isVisible())
        self.cancel_button.setText("Cancel" if on else "Close")
        self.cancel_button.setEnabled(True)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c62828" if error else "")
        self.status.setText(text)

    # ------------------------------------------------------------------ choosing files
    def _browse_dir(self, field: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, field.text() or str(Path.home()))
        if path:
            field.setText(path)

    def _browse_captions(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Captions file", self.folder.text() or str(Path.home()),
                                              "Captions (*.csv *.json);;All files (*)")
        if path:
            self.captions.setText(path)


def _with_browse(field: QLineEdit, browse: Callable[[], Any]) -> QWidget:
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(field, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    box.addWidget(button)
    return row


class TrainingMixin:
    """Mixed into :class:`MainWindow`: Tools ▸ Train Model… and using its result."""

    def choose_training(self) -> None:
        if self.train_dialog is not None:
            self.train_dialog.raise_()
            self.train_dialog.activateWindow()
            return
        from duch_desktop.core.model.defaults import data_dir

        folder = str(self.folder or "")
        name = f"{self.folder.name}-model" if self.folder is not None else "my-model"
        given = {k: self.archive_options[k] for k in ("image_encoder", "text_encoder") if k in self.archive_options}
        encoders = (lambda: (given["image_encoder"], given["text_encoder"])) if len(given) == 2 else None
        dialog = TrainDialog(folder, str(data_dir() / "models" / name), can_use=self.archive is not None,
                             encoders=encoders, parent=self)
        dialog.use_model.connect(self.use_model)
        dialog.finished.connect(lambda _r: setattr(self, "train_dialog", None))
        self.train_dialog = dialog
        dialog.show()

    def use_model(self, bundle: str) -> None:
        """Index the open folder again with the model bundle at ``bundle`` (and keep using it)."""
        if self.archive is None:
            return
        folder, index_dir = self.folder, self.archive.index_dir
        self.archive_options["model"] = Path(bundle)
        if self.train_dialog is not None:
            self.train_dialog.close()
        self._open(index_dir, folder, True)  # the index notices the new model and encodes every tile again
        self.statusBar().showMessage(f"Indexing {folder} again with the model in {bundle}…", 10000)
