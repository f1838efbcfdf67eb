"""Figures (PNG) and a self-contained `report.html` of a run or a comparison."""

from __future__ import annotations

from .html import render_report, write_compare_report, write_report

__all__ = ["render_report", "write_compare_report", "write_report"]
