"""Small building blocks of the main window: the search bar, the indexing bar, the errors
dock, the notes above the results and the plain-language message page."""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QLayout, QLineEdit, QListWidget, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from duch_desktop.core.jobs import Progress


def vbox(parent: QWidget, *items) -> QVBoxLayout:
    """``parent``'s vertical layout of ``items`` (widgets and layouts), top to bottom."""
    box = QVBoxLayout(parent)
    for item in items:
        if isinstance(item, QLayout):
            box.addLayout(item)
        else:
            box.addWidget(item)
    return box


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(event: Progress) -> str:
    """'120 / 480 tiles · 35.2 tiles/s · ETA 0:10 · 2 errors · 1 skipped' (or the stage's own words)."""
    info = event.info or {}
    if event.stage == "scan":
        return f"Scanning the folder… {event.done:,} files found"
    if event.stage == "plan":
        return f"Cutting scenes into chips… {event.done:,} / {event.total:,} files" if event.total else \
            "Cutting scenes into chips…"
    if event.stage == "captions":
        return f"Encoding captions… {event.done:,} / {event.total:,}" if event.total else "Encoding captions…"
    if event.stage == "index" and not event.total and not event.done and event.message:
        return event.message
    parts = [f"{event.done:,} / {event.total:,} tiles" if event.total else f"{event.done:,} tiles"]
    rate = info.get("rate")
    if rate is not None:
        parts.append(f"{float(rate):.1f} tiles/s")
    if event.total:
        parts.append(f"ETA {format_duration(info.get('eta'))}")
    errors, skipped = int(info.get("errors") or 0), int(info.get("skipped") or 0)
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if skipped:
        parts.append(f"{skipped} unchanged")
    return " · ".join(parts)


class SearchBar(QWidget):
    """Query box (Enter searches), number of results, maximum Hamming radius ("any")."""

    search_requested = Signal(str)
    options_changed = Signal()  # Results or Max distance changed (after a short pause in typing)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.query = QLineEdit()
        self.query.setPlaceholderText("Describe what you are looking for, e.g. “a river next to farmland”, "
                                      "and press Enter")
        self.query.setClearButtonEnabled(True)
        self.query.setAccessibleName("Search description")
        self.query.returnPressed.connect(self._submit)

        self.count = QSpinBox()
        self.count.setRange(1, 1000)
        self.count.setValue(20)
        self.count.setToolTip("Number of results to show")
        self.count.setAccessibleName("Number of results")

        self.radius = QSpinBox()
        self.radius.setRange(-1, 256)
        self.radius.setValue(-1)
        self.radius.setSpecialValueText("any")
        self.radius.setToolTip("Maximum Hamming distance of a result (“any” = no limit)")
        self.radius.setAccessibleName("Maximum Hamming distance")

        self.button = QPushButton("Search")
        self.button.clicked.connect(self._submit)
        # Arrow clicks and typing each change the value: wait for a pause before searching again.
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(350)
        self._settle.timeout.connect(self.options_changed)
        for box in (self.count, self.radius):
            box.valueChanged.connect(lambda _v: self._settle.start())
            box.lineEdit().returnPressed.connect(self._options_now)

        row = QHBoxLayout(self)
        row.setContentsMargins(6, 6, 6, 2)
        row.addWidget(self.query, 1)
        row.addWidget(QLabel("Results:"))
        row.addWidget(self.count)
        row.addWidget(QLabel("Max distance:"))
        row.addWidget(self.radius)
        row.addWidget(self.button)

    def k(self) -> int:
        return self.count.value()

    def max_radius(self) -> int | None:
        r = self.radius.value()
        return None if r < 0 else r

    def set_bits(self, bits: int) -> None:
        self.radius.setMaximum(max(0, int(bits)))

    def settled(self) -> None:
        """A search is starting with the current values: no need to announce a change later."""
        self._settle.stop()

    def _options_now(self) -> None:
        if self._settle.isActive():
            self._settle.stop()
            self.options_changed.emit()

    def _submit(self) -> None:
        self.search_requested.emit(self.query.text().strip())


class IndexBar(QWidget):
    """Progress of the running indexing job, with a Cancel button; hidden when idle."""

    cancel_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(200)
        self.text = QLabel()
        self.file = QLabel()
        self.file.setMinimumWidth(50)
        self.file.setTextFormat(Qt.TextFormat.PlainText)
        self.cancel = QPushButton("Cancel")
        self.cancel.setToolTip("Stop indexing (Esc); what is already indexed is kept")
        self.cancel.clicked.connect(self.cancel_requested)
        top = QHBoxLayout()
        top.addWidget(QLabel("Indexing:"))
        top.addWidget(self.bar, 1)
        top.addWidget(self.cancel)
        box = QVBoxLayout(self)
        box.setContentsMargins(6, 2, 6, 2)
        box.addLayout(top)
        box.addWidget(self.text)
        box.addWidget(self.file)
        self.setVisible(False)

    def start(self, text: str = "Scanning the folder…") -> None:
        self.last_index_event: Progress | None = None
        self.bar.setRange(0, 0)  # busy until the total is known
        self.text.setText(text)
        self.file.setText("")
        self.cancel.setEnabled(True)
        self.setVisible(True)

    def update_progress(self, event: Progress) -> None:
        if event.stage == "index" and event.total:
            self.last_index_event = event
        if event.total:
            self.bar.setRange(0, event.total)
            self.bar.setValue(min(event.done, event.total))
        else:
            self.bar.setRange(0, 0)
        self.text.setText(progress_text(event))
        if event.message and event.stage == "index" and event.total:
            metrics = self.file.fontMetrics()
            self.file.setText(metrics.elidedText(str(event.message), Qt.TextElideMode.ElideMiddle,
                                                 max(100, self.file.width())))
            self.file.setToolTip(str(event.message))

    def expected_tiles(self, indexed: int) -> int | None:
        """Tiles the index will hold when this run ends: ``indexed`` now plus the run's remaining work."""
        event = getattr(self, "last_index_event", None)
        if event is None:
            return None
        return indexed + max(0, int(event.total) - int(event.done))

    def cancelling(self, text: str = "Cancelling… (finishing the current batch)") -> None:
        self.cancel.setEnabled(False)
        self.text.setText(text)

    def stop(self) -> None:
        self.setVisible(False)


class ErrorsDock(QDockWidget):
    """Files that could not be indexed, with the reason; no pop-ups."""

    def __init__(self, parent=None):
        super().__init__("Files that could not be indexed", parent)
        self.setObjectName("errorsDock")
        self.list = QListWidget()
        self.list.setAccessibleName("Indexing errors")
        self.setWidget(self.list)

    def set_errors(self, errors: Sequence[Any]) -> None:
        self.list.clear()
        for rel, reason in errors:
            self.list.addItem(f"{rel} — {reason}")
        self.setWindowTitle(f"Files that could not be indexed ({len(errors)})" if errors
                            else "Files that could not be indexed")

    def entries(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]


NOTICE_STYLES = {"partial": "background: #e3f2fd; color: #0d47a1;",
                 "weak": "background: #fff3e0; color: #8a4b00;",
                 "note": "background: #f1f1f1; color: #333333;"}


class SearchNotice(QWidget):
    """What the user should know about the results on screen (partial, weak match, a long
    query cut short), one wrapped line each above the results; hidden when there is nothing."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.box = QVBoxLayout(self)
        self.box.setContentsMargins(6, 2, 6, 2)
        self.box.setSpacing(2)
        self.labels: list[QLabel] = []
        self.setVisible(False)

    def show_answer(self, notes: Sequence[tuple[str, str]]) -> None:
        for label in self.labels:
            self.box.removeWidget(label)
            label.deleteLater()
        self.labels = []
        for kind, text in notes:
            label = QLabel(text)
            label.setObjectName(f"notice-{kind}")
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setStyleSheet(NOTICE_STYLES.get(kind, "") + " padding: 4px; border-radius: 3px;")
            self.box.addWidget(label)
            self.labels.append(label)
        self.setVisible(bool(notes))

    def texts(self) -> dict[str, str]:
        return {label.objectName().removeprefix("notice-"): label.text() for label in self.labels}


class MessagePage(QLabel):
    """A centred, word-wrapped plain message shown instead of the results grid."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMargin(24)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.setFont(font)
