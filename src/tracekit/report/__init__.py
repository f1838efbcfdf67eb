"""A run's figures (PNG) and its self-contained `report.html`."""

from __future__ import annotations

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
