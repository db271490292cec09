"""Menus and actions of the main window."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from . import help


class MenusMixin:
    """Mixed into :class:`MainWindow`: builds File / Edit / View / Tools / Help."""

    def _action(self, menu, text: str, slot, shortcut=None, tip: str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = self._action(file_menu, "&Open Folder…", self.choose_folder, QKeySequence.StandardKey.Open)
        self.open_index_action = self._action(file_menu, "Open &Index…", self.choose_index)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        self.reindex_action = self._action(file_menu, "Index &Folder", lambda: self.start_indexing(), "Ctrl+R",
                                           "Index new and changed files (incremental)")
        self.captions_action = self._action(file_menu, "Index with Captions &File…", self.choose_captions, None,
                                            "Add your own captions (CSV file,caption or JSON) and index the folder")
        self.index_options_action = self._action(
            file_menu, "Indexing &Options…", self.choose_index_options, None,
            "How this folder is read: scenes cut into chips, bands and stretch of multi-band rasters")
        self.cancel_action = self._action(file_menu, "&Cancel Indexing", self.cancel_indexing, Qt.Key.Key_Escape,
                                          "Stop indexing; what is already indexed is kept")
        file_menu.addSeparator()
        self.export_csv_action = self._action(file_menu, "Export Results as &CSV…", lambda: self.choose_export("csv"))
        self.export_geojson_action = self._action(file_menu, "Export Results as &GeoJSON…",
                                                  lambda: self.choose_export("geojson"))
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q")  # the standard key is unset on some platforms

        edit_menu = bar.addMenu("&Edit")
        self.find_action = self._action(edit_menu, "&Find…", self.focus_search, QKeySequence.StandardKey.Find)

        view_menu = bar.addMenu("&View")
        modes = QActionGroup(self)
        self.grid_action = self._action(view_menu, "Results as &Grid", lambda: self.set_results_mode("grid"),
                                        "Ctrl+1", "Show the results as a grid of thumbnails")
        self.map_action = self._action(view_menu, "Results on a &Map", lambda: self.set_results_mode("map"),
                                       "Ctrl+2", "Show where the results lie (georeferenced results only)")
        for action in (self.grid_action, self.map_action):
            action.setCheckable(True)
            modes.addAction(action)
        (self.map_action if self.results_mode == "map" else self.grid_action).setChecked(True)
        self.fit_map_action = self._action(view_menu, "&Fit Map to Results", self.fit_map, "Ctrl+0",
                                           "Show the map zoomed to every result with a footprint")
        view_menu.addSeparator()
        view_menu.addAction(self.errors_dock.toggleViewAction())

        tools_menu = bar.addMenu("&Tools")
        runtime_menu = tools_menu.addMenu("Encoder &Runtime")
        runtimes = QActionGroup(self)
        self.runtime_actions = {}
        for name, text in (("auto", "&Automatic (ONNX Runtime on a CPU, PyTorch on a GPU)"),
                           ("onnx", "&ONNX Runtime"), ("torch", "&PyTorch")):
            action = self._action(runtime_menu, text, lambda _=False, n=name: self.set_runtime(n))
            action.setCheckable(True)
            action.setChecked(name == self.settings.runtime())
            runtimes.addAction(action)
            self.runtime_actions[name] = action
        self.train_action = self._action(tools_menu, "&Train Model…", self.choose_training, None,
                                         "Train a model on your own captioned tiles (as duch train)")
        tools_menu.setToolTipsVisible(True)

        help_menu = bar.addMenu("&Help")
        self.shortcuts_action = self._action(help_menu, "&Keyboard Shortcuts", lambda: help.show_shortcuts(self),
                                             QKeySequence.StandardKey.HelpContents)
        self.about_action = self._action(help_menu, "&About DUCH Desktop", lambda: help.show_about(self))
        self._update_actions()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        folders = self.settings.recent_folders()
        for folder in folders:
            self.recent_menu.addAction(folder).triggered.connect(lambda _=False, f=folder: self.open_folder(f))
        if folders:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear Menu").triggered.connect(self.settings.clear_recent_folders)
        else:
            self.recent_menu.addAction("No recent folders").setEnabled(False)
