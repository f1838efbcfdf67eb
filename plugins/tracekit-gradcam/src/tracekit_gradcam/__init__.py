"""tracekit-gradcam: Grad-CAM saliency (`grad-cam`) and the CAM-spread score (`cam-spread`).

tracekit finds this module through the `tracekit` entry-point group (see pyproject.toml) and
calls the hooks below; nothing in tracekit names this plugin.
"""

from __future__ import annotations

import tracekit
from tracekit.hookspecs import Register


@tracekit.hookimpl
def tracekit_register_saliency(register: Register) -> None:
    from .factories import grad_cam

    register("grad-cam", grad_cam)


@tracekit.hookimpl
def tracekit_register_scores(register: Register) -> None:
    from .factories import cam_spread

    register("cam-spread", cam_spread)
