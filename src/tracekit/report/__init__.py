"""Figures (PNG) and a self-contained `report.html` of a run or a comparison, rebuilt from its
run directory alone (`write_report(RUN_DIR)`, also what `tracekit report RUN_DIR` runs)."""

from __future__ import annotations

from .html import write_report

__all__ = ["write_report"]
