"""The widget's dataset mode: a study's films in a table, Previous / Next, Reviewed (the headless ``study.Study``
does the work; this panel shows it)."""

from __future__ import annotations

from qtpy.QtWidgets import (QAbstractItemView, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                            QPushButton, QTableWidgetItem, QVBoxLayout)

from ._panels import list_table

STATUS_COLOURS = {"reviewed": "#81c784", "skipped": "#ffb74d", "in progress": "#e0e0e0", "not opened": "#9e9e9e"}


class StudyPanel(QGroupBox):
    """Open a folder of films as a study; its films with their status; Previous / Reviewed / Next."""

    def __init__(self, on_open, on_film, on_previous, on_next, on_reviewed, on_adapt):
        super().__init__("Study (a folder of films)")
        lay = QVBoxLayout(self)
        self.open_btn = QPushButton("Open study folder…")
        self.open_btn.setToolTip("Work through a folder of films: each change is saved at once in the folder's "
                                 ".landmarks-study store, and the study resumes where you left it")
        self.open_btn.clicked.connect(on_open)
        lay.addWidget(self.open_btn)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.table = list_table(["Film", "Status"], stretch=0, max_height=180, on_activate=on_film)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.table.setToolTip("Double-click a film to open it")
        lay.addWidget(self.table)
        row = QHBoxLayout()
        self.previous_btn = QPushButton("◀ Previous")
        self.previous_btn.setToolTip("The previous film (Alt-Left)")
        self.previous_btn.clicked.connect(on_previous)
        self.reviewed_btn = QPushButton("Reviewed")
        self.reviewed_btn.setCheckable(True)
        self.reviewed_btn.setToolTip("Mark this film done (Alt-V); the exports take the reviewed films")
        self.reviewed_btn.clicked.connect(on_reviewed)
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.setToolTip("The next film (Alt-Right); it was detected while you worked on this one")
        self.next_btn.clicked.connect(on_next)
        for b in (self.previous_btn, self.reviewed_btn, self.next_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.adapt_btn = QPushButton("Adapt the model to this study…")
        self.adapt_btn.setToolTip("Fine-tune the model on the reviewed films (a fifth held aside to measure it), in "
                                  "the background; then compare it with the current model and switch if you want")
        self.adapt_btn.clicked.connect(on_adapt)
        lay.addWidget(self.adapt_btn)
        self.adapt_progress = QProgressBar()
        self.adapt_progress.setRange(0, 100)
        self.adapt_progress.setVisible(False)
        lay.addWidget(self.adapt_progress)
        self.refresh(None)

    def refresh(self, study) -> None:
        """Show ``study`` (None: no study open — only the open button)."""
        on = study is not None
        for w in (self.table, self.previous_btn, self.reviewed_btn, self.next_btn, self.summary, self.adapt_btn):
            w.setVisible(on)
        if not on:
            return
        text = study.describe()
        if study.read_only:
            text += f"<br><span style='color: #ffb74d;'>Read-only: {study.read_only_reason}</span>"
        self.summary.setText(text)
        self.table.setRowCount(len(study.films))
        for i, f in enumerate(study.films):
            name = QTableWidgetItem(("▶ " if i == study.current else "") + f.path)
            name.setToolTip(f.path)
            status = QTableWidgetItem(f.describe())
            status.setToolTip(f.describe() + (f" · {f.model}" if f.model else ""))
            status.setForeground(_brush(STATUS_COLOURS.get(f.status, "#e0e0e0")))
            self.table.setItem(i, 0, name)
            self.table.setItem(i, 1, status)
        if study.current is not None:
            self.table.selectRow(study.current)
            self.table.scrollToItem(self.table.item(study.current, 0), QAbstractItemView.PositionAtCenter)
        current = study.films[study.current] if study.current is not None else None
        self.reviewed_btn.setChecked(bool(current is not None and current.reviewed))
        self.reviewed_btn.setEnabled(current is not None and not study.read_only)
        self.previous_btn.setEnabled(study.next_index(-1) is not None)
        self.next_btn.setEnabled(study.next_index(1) is not None)
        self.adapt_btn.setEnabled(not study.read_only)


    def update_row(self, study, i: int) -> None:
        """Film ``i``'s status and the summary (after a correction: the rest of the table is unchanged)."""
        item = self.table.item(i, 1)
        if item is None or study is None:
            return
        f = study.films[i]
        item.setText(f.describe())
        item.setForeground(_brush(STATUS_COLOURS.get(f.status, "#e0e0e0")))
        self.summary.setText(study.describe() + (f"<br><span style='color: #ffb74d;'>Read-only: "
                                                 f"{study.read_only_reason}</span>" if study.read_only else ""))


def _brush(colour: str):
    from qtpy.QtGui import QBrush, QColor

    return QBrush(QColor(colour))


__all__ = ["StudyPanel"]
