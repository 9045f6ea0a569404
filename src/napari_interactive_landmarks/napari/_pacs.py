"""The widget's PACS panel: search a DICOMweb server, open a series' films, send the open film's report back (the
headless ``io.dicomweb`` does the work; this panel shows it)."""

from __future__ import annotations

import os

from qtpy.QtWidgets import (QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from ._panels import list_table

COLUMNS = ("date", "patient_id", "accession", "modality", "description", "instances")


class PacsPanel(QGroupBox):
    """URL and search fields, the matching series, *Open series* and *Send report to PACS*."""

    def __init__(self, on_search, on_open, on_send):
        super().__init__("PACS (DICOMweb)")
        self.setCheckable(True)
        outer = QVBoxLayout(self)
        self.body = QWidget()  # folded (hidden) until the box is ticked
        outer.addWidget(self.body)
        lay = QVBoxLayout(self.body)
        lay.setContentsMargins(0, 0, 0, 0)
        self.toggled.connect(self.body.setVisible)
        self.setChecked(False)
        self.body.setVisible(False)
        grid = QGridLayout()
        self.url = QLineEdit(os.environ.get("NAPARI_LANDMARKS_DICOMWEB_URL", ""))
        self.url.setPlaceholderText("https://pacs.example.org/dicom-web")
        self.url.setToolTip("The DICOMweb root of the PACS. Credentials: NAPARI_LANDMARKS_DICOMWEB_USER / _PASSWORD "
                            "or NAPARI_LANDMARKS_DICOMWEB_CONFIG in the environment (never in the URL)")
        self.patient_id, self.accession, self.date = QLineEdit(), QLineEdit(), QLineEdit()
        self.date.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        for row, (label, w) in enumerate((("Server", self.url), ("Patient ID", self.patient_id),
                                          ("Accession", self.accession), ("Study date", self.date))):
            grid.addWidget(QLabel(label), row, 0)
            grid.addWidget(w, row, 1)
        lay.addLayout(grid)
        self.search_btn = QPushButton("Search")
        self.search_btn.clicked.connect(on_search)
        lay.addWidget(self.search_btn)
        self.table = list_table(["Date", "Patient", "Accession", "Mod.", "Series", "#"], stretch=4, max_height=160,
                                on_activate=on_open)
        lay.addWidget(self.table)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open series")
        self.open_btn.clicked.connect(lambda: on_open(self.table.currentRow()))
        self.send_btn = QPushButton("Send report to PACS")
        self.send_btn.setToolTip("Store this film's landmarks and measurements as a DICOM structured report in the "
                                 "study it came from")
        self.send_btn.clicked.connect(on_send)
        row.addWidget(self.open_btn)
        row.addWidget(self.send_btn)
        lay.addLayout(row)
        self.rows: list[dict] = []

    def show_rows(self, rows: list[dict]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, key in enumerate(COLUMNS):
                item = QTableWidgetItem(str(r.get(key, "")))
                item.setToolTip(f"{r.get('patient_name', '')} · study {r['study']} · series {r['series']}")
                self.table.setItem(i, j, item)
        if rows:
            self.table.selectRow(0)
