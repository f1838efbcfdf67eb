"""tracekit-gradcam: Grad-CAM saliency (`grad-cam`) and the CAM-spread score (`cam-spread`).

tracekit finds this module through the `tracekit` entry-point group (see pyproject.toml) and
calls the hooks below; nothing in tracekit names this plugin. Each component is named where its
factory is defined (`factories.py`), so the hooks only hand them over.
"""

from __future__ import annotations

import tracekit
from tracekit.hookspecs import Register


@tracekit.hookimpl
def tracekit_register_saliency(register: Register) -> None:
    from .factories import saliency  # a light module: listing plugins stays fast

    saliency.into(register)


@tracekit.hookimpl
def tracekit_register_scores(register: Register) -> None:
    from .factories import scores

    scores.into(register)
