"""The widget's two panels, each a Qt group box that fills itself from a :class:`LandmarkSession`: *Check next* (the
points by expected error, the suggested correction and why, the uncertainty and region toggles) and *Measurements*
(each value with its ±, every doubt in words). The widget (``_widget.py``) owns the session, the layers and the
buttons; a panel only shows.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (QAbstractItemView, QCheckBox, QGroupBox, QHeaderView, QLabel, QPushButton, QTableWidget,
                            QTableWidgetItem, QVBoxLayout)


def list_table(headers, stretch: int, max_height: int, on_activate) -> QTableWidget:
    """A read-only table of rows to pick one from (a study's films, a PACS's series): whole rows selected, one at a
    time, column ``stretch`` taking the width left, ``on_activate(row)`` on a double-click."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(stretch, QHeaderView.Stretch)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.setMaximumHeight(max_height)
    table.cellDoubleClicked.connect(lambda row, _col: on_activate(row))
    return table


class CheckNextPanel(QGroupBox):
    """The unpinned points by decreasing expected error, the suggested next correction (by expected gain) and why,
    whether the film is unlike the calibration films, and the uncertainty / region toggles."""

    def __init__(self, on_go_to, on_go_to_suggested, on_toggle_uncertainty, on_toggle_regions, on_toggle_all_regions):
        super().__init__("Check next (expected radial error)")
        el = QVBoxLayout(self)
        self.suggest_label = QLabel("")
        self.suggest_label.setWordWrap(True)
        el.addWidget(self.suggest_label)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["landmark", "ERE", "region"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.table.horizontalHeaderItem(2).setToolTip(
            "Area of the point's conformal region: the ellipse drawn around it holds the true point with the stated "
            "probability (calibrated on the click protocol)")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.rows: list[int] = []  # the landmark index of each row
        self.table.cellDoubleClicked.connect(lambda row, col: on_go_to(self.rows[row]))
        self.table.setMaximumHeight(180)
        el.addWidget(self.table)
        goto = QPushButton("Go to suggested point")
        goto.setToolTip("Centre the view on the unpinned landmark with the highest ERE and select it (Alt-N)")
        goto.clicked.connect(on_go_to_suggested)
        el.addWidget(goto)
        self.show_uncertainty = QCheckBox("Show uncertainty map")
        self.show_uncertainty.setChecked(True)
        self.show_uncertainty.toggled.connect(on_toggle_uncertainty)
        el.addWidget(self.show_uncertainty)
        self.show_regions = QCheckBox("Show 95 % regions")
        self.show_regions.setChecked(True)
        self.show_regions.setToolTip("Around every point the model placed, the ellipse that holds the true point with "
                                     "the stated probability (a conformal region); the suggested next point's in red")
        self.show_regions.toggled.connect(on_toggle_regions)
        el.addWidget(self.show_regions)
        self.all_regions = QCheckBox("… for every point, not only those in doubt")
        self.all_regions.setChecked(False)
        self.all_regions.setToolTip("By default a region is drawn only around the suggested next point and the points "
                                    "whose expected error exceeds 2 mm (20 px without a pixel size)")
        self.all_regions.toggled.connect(on_toggle_all_regions)
        el.addWidget(self.all_regions)
        self.regions_note = QLabel("")
        self.regions_note.setWordWrap(True)
        self.regions_note.setVisible(False)
        el.addWidget(self.regions_note)

    @staticmethod
    def level_text(session) -> str:
        level = None if session is None else session.region_level
        return "95 %" if level is None else f"{level * 100:g} %"

    @staticmethod
    def region_areas(session):
        """Each landmark's region area as the list shows it ("123 mm²" with a pixel spacing, else px²; "–" where it
        has none), or None when the model has no regions."""
        arr = session.region_arrays()
        if arr is None:
            return None
        mm = session.spacing is not None
        values, unit = (arr["area_mm2"], "mm²") if mm else (arr["area_px2"], "px²")
        return ["–" if not np.isfinite(v) else f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}" for v in values]

    def show_regions_note(self, session, model_name: str | None) -> None:
        """The regions checkbox follows the model: its level in the text, or, for a model without regions, disabled
        and a line saying so (nothing is drawn or exported)."""
        has = session is not None and session.region_level is not None
        self.show_regions.setText(f"Show {self.level_text(session)} regions")
        self.show_regions.setEnabled(has)
        self.table.setColumnHidden(2, not has)
        if has:
            self.regions_note.setVisible(False)
        else:
            name = model_name or "this model"
            self.regions_note.setText(f"<i>The model '{name}' has no calibrated regions (its card has none): none are "
                                      "drawn or saved. <code>napari-landmarks calibrate</code> fits them.</i>")
            self.regions_note.setVisible(True)

    def fill(self, s, corner_problems: dict | None = None, model_name: str | None = None) -> None:
        """The ERE-sorted list and the suggested next correction for session ``s`` (the cue on the points is the
        layers' adapter's); ``corner_problems``: vertebrae drawn red, named under the suggestion."""
        ere = s.ere
        self.setVisible(ere is not None)
        if ere is None:
            return
        unit, factor = ("mm", float(np.mean(s.spacing))) if s.spacing is not None else ("px", 1.0)
        nxt = s.suggest_next()
        pinned = s.pinned
        areas = self.region_areas(s)
        # list: unpinned landmarks by decreasing ERE; rows are reused (text and style set in place)
        order = [int(i) for i in np.argsort(-np.nan_to_num(ere, nan=-1.0)) if not pinned[i]]
        self.rows = order
        wide = s.spread_wide
        t = self.table
        t.setUpdatesEnabled(False)
        try:
            if t.rowCount() != len(order):
                t.setRowCount(len(order))
            plain, bold = QFont(), QFont()
            bold.setBold(True)
            red, normal = QBrush(QColor("#ff5252")), QBrush()
            for row, i in enumerate(order):
                texts = (s.schema.full_name(i) + (" (map spread: unplaceable)" if wide is not None and wide[i] else ""),
                         "–" if not np.isfinite(ere[i]) else f"{ere[i] * factor:.1f} {unit}",
                         areas[i] if areas is not None else "")
                for col, text in enumerate(texts):
                    it = t.item(row, col)
                    if it is None:
                        it = QTableWidgetItem()
                        t.setItem(row, col, it)
                    it.setText(text)
                    it.setFont(bold if i == nxt else plain)
                    it.setForeground(red if i == nxt else normal)
        finally:
            t.setUpdatesEnabled(True)
        if nxt is None:
            text = "All landmarks are corrected by hand."
        else:
            calibrated = s.predictor.temperatures is not None
            region = f", {self.level_text(s)} region {areas[nxt]}" if areas is not None and areas[nxt] != "–" else ""
            gain = s.expected_gain
            why = ""
            if gain is not None and np.isfinite(gain[nxt]):  # ranked by the expected gain, not the ERE
                why = (f"<br>its correction is expected to remove {gain[nxt] * factor:.0f} {unit} of error, its own and "
                       "the other points' it tells the anatomy about: the most of any point")
            text = (f"Suggested next: <b>{s.schema.full_name(nxt)}</b> (ERE {ere[nxt] * factor:.1f} {unit}{region})"
                    + why + ("" if calibrated else "<br><i>uncalibrated model: ERE ranks points but is not a calibrated "
                                             "error</i>"))
        if s.unfamiliar:  # the doubt's calibration does not cover such a film: said, and the regions wider
            text += ("<br><span style='color:#ffab40'>This film is unlike the films the doubt was calibrated on ("
                     + "; ".join(s.film_shift.reasons) + f"): regions drawn at {self.level_text(s)}, expected "
                     "errors not validated on such films.</span>")
        self.show_regions_note(s, model_name)
        problems = corner_problems or {}
        if problems:  # a vertebra drawn red: its corners came out in the wrong order
            text += "<br><span style='color:#ff5252'>Corners out of order: " + "; ".join(
                f"<b>{v}</b> ({why})" for v, why in problems.items()) + "</span>"
        self.suggest_label.setText(text)


class MeasurementsPanel(QGroupBox):
    """The measurements of the points shown: value ± expected error, one line each (⚠ where in doubt), and under the
    table every doubt and every reason a measurement is unavailable, in words."""

    def __init__(self):
        super().__init__("Measurements")
        ml = QVBoxLayout(self)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["measurement", "value"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        ml.addWidget(self.table)
        # every doubt in whole sentences under the table (the table keeps one line per measurement)
        self.doubts = QLabel("")
        self.doubts.setWordWrap(True)
        self.doubts.setStyleSheet("color: #ffb74d;")
        ml.addWidget(self.doubts)

    def fill(self, ms: dict) -> None:
        """The measurements table (value ± expected error, one line each, ⚠ where in doubt) and, under it, the
        whole reason for every measurement that is unavailable or uncertain: doubt is shown, never hidden."""
        t = self.table
        doubts = []
        t.setUpdatesEnabled(False)
        try:
            t.setRowCount(len(ms))
            warn = QBrush(QColor("#ffb74d"))
            for row, m in enumerate(ms.values()):
                name = QTableWidgetItem(m.name)
                name.setToolTip(m.definition)
                text = m.shown()  # value ± expected error, ⚠ where in doubt (the CLI prints the same)
                if not m.available:
                    tip = f"unavailable: {m.reason}"
                    doubts.append((m.name, f"unavailable: {m.reason}"))
                else:
                    tip = m.definition
                    if getattr(m, "uncertain", False):
                        doubt = getattr(m, "doubt", None) or "uncertain"
                        tip = f"{doubt}\n\n{m.definition}"
                        doubts.append((m.name, doubt))
                    if getattr(m, "note", None):  # e.g. the vertebrae a Cobb angle was computed without
                        tip = f"{m.note}\n\n{tip}"
                        doubts.append((m.name, m.note))
                val = QTableWidgetItem(text)
                val.setToolTip(tip)
                if not m.available or getattr(m, "uncertain", False):
                    val.setForeground(warn)
                t.setItem(row, 0, name)
                t.setItem(row, 1, val)
            self.setVisible(bool(ms))
            height = sum(t.rowHeight(r) for r in range(t.rowCount())) + t.horizontalHeader().height() + 4
            t.setMinimumHeight(height)  # every row shown: the panel scrolls, the table does not
            t.setMaximumHeight(height)
        finally:
            t.setUpdatesEnabled(True)
        by_reason: dict[str, list[str]] = {}  # one line per reason: "cobb_main, cobb_pt unavailable: …"
        for name, why in doubts:
            by_reason.setdefault(why, []).append(name)
        self.doubts.setText("<br>".join(f"<b>{', '.join(names)}</b> {why}" for why, names in by_reason.items()))
        self.doubts.setVisible(bool(doubts))
