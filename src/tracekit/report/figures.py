"""A run's figures (PNG, matplotlib's Agg canvas; pyplot's global state is never touched).

- `roc.png`: ROC curves of every attack on the test part, AUC in the legend (the paper's Fig. 4b).
- `score_hist.png`: score histograms, clean vs each attack, with the threshold (Fig. 4a).
- `examples_<attack>.png`: a few test images per attack (successful adversarials first): the
  original, the perturbation (amplified, with its scale), the adversarial, and for the clean and
  the adversarial image the feature response (gray map) and the map of the run's own score (the
  local entropy of its configured neighbourhood for the paper's; Figs. 2-3), as the run stored
  them: drawing needs neither torch nor the model.

A comparison (`tracekit compare SPEC`) gets `roc_<attack>.png` (one curve per detector) and
`auc_heatmap.png` (detectors x attacks).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TracekitError
from ..layout import TableNames
from .distributions import Distribution, roc
from .rundata import ExampleRows, Examples, RunData, RunsData

DPI = 110
# Image figures: a row (image and its title), the room for titles above and colorbars below.
ROW_INCHES, AXES_TITLE_INCHES, SUPTITLE_LINE_INCHES, BOTTOM_INCHES = 2.45, 0.45, 0.22, 0.6
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "text.parse_math": False,  # labels and class names are shown literally ('$' is not TeX)
    "image.interpolation": "nearest",
    "axes.titley": 1.0,  # fixed title position: automatic placement measures every tick (slow)
}
CLEAN_COLOR, ADV_COLOR = "#1f77b4", "#d62728"


@dataclass
class Example:
    """One attacked test image: the clean and adversarial predictions and scores."""

    sample_id: str
    label: str
    clean_class: str
    clean_confidence: float
    clean_score: float
    adv_class: str
    adv_confidence: float
    adv_score: float
    success: bool


def percent(p: float) -> str:
    """A probability as a percentage: whole percents, and two decimals below 1% (a 1000-class
    model's confidence is often a fraction of a percent)."""
    return f"{p:.0%}" if p >= 0.01 or p == 0 else f"{p:.2%}"


@contextmanager
def _figure(path: Path, layout: str | None = "constrained", **kwargs: Any) -> Iterator[Any]:
    """A matplotlib `Figure` saved to `path` as PNG on exit."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(layout=layout, **kwargs)
        yield fig
        fig.savefig(path, dpi=DPI, facecolor="white")


@contextmanager
def _image_figure(path: Path, nrows: int, ncols: int, width: float, suptitle: str) -> Iterator[tuple[Any, Any]]:
    """A figure of `nrows` x `ncols` image axes without ticks under `suptitle`, with room for
    two-line axes titles and colorbars below; yields `(figure, axes[nrows, ncols])`.

    Laid out by hand: constrained layout is slow with dozens of image axes.
    """
    top = AXES_TITLE_INCHES + SUPTITLE_LINE_INCHES * (suptitle.count("\n") + 1)
    height = ROW_INCHES * nrows + top + BOTTOM_INCHES
    with _figure(path, layout=None, figsize=(width, height)) as fig:
        axes = fig.subplots(
            nrows, ncols, squeeze=False,
            gridspec_kw={"left": 0.01, "right": 0.99, "top": 1 - top / height,
                         "bottom": BOTTOM_INCHES / height, "wspace": 0.12, "hspace": 0.32},
        )  # fmt: skip
        for ax in axes.flat:
            ax.set_axis_off()
        fig.suptitle(suptitle, y=1 - 0.1 / height, va="top")
        yield fig, axes


def _colorbar(fig: Any, ax: Any, image: Any, label: str) -> None:
    """A horizontal colorbar just below `ax`."""
    cax = ax.inset_axes([0.08, -0.14, 0.84, 0.06])
    fig.colorbar(image, cax=cax, orientation="horizontal", label=label)


@dataclass
class Pictures:
    """A detector's pictures of some images: gray feature responses `[N,H,W]` (uint8) and, where
    its score has one, the score's map `[N,H,W]`, titled `title` (e.g. `local-entropy map (size 3)`)."""

    gray: np.ndarray
    score_map: np.ndarray | None
    title: str

    def part(self, rows: slice | np.ndarray) -> Pictures:
        return Pictures(self.gray[rows], None if self.score_map is None else self.score_map[rows], self.title)


def _show_image(ax: Any, image: np.ndarray) -> None:
    """`[C,H,W]` in [0, 1]: RGB as is, anything else as gray (mean over channels)."""
    array = np.asarray(image, dtype=np.float32)
    if array.shape[0] == 3:
        ax.imshow(np.clip(array.transpose(1, 2, 0), 0, 1))
    else:
        ax.imshow(array.mean(0), cmap="gray", vmin=0, vmax=1)


def _show_perturbation(ax: Any, delta: np.ndarray, span: float) -> Any:
    """The perturbation on the color scale [-span, span]: RGB as 0.5 + delta / (2 span) (returns
    None), anything else on a diverging colormap (returns the image, for a colorbar)."""
    array = np.asarray(delta, dtype=np.float32)
    if array.shape[0] == 3:
        ax.imshow(np.clip(0.5 + array.transpose(1, 2, 0) / (2 * span), 0, 1))
        return None
    return ax.imshow(array.mean(0), cmap="RdBu_r", vmin=-span, vmax=span)


def _show_gray(ax: Any, gray: np.ndarray) -> None:
    """A gray feature response (uint8)."""
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255)


def _show_score_map(ax: Any, score_map: np.ndarray, vmax: float) -> Any:
    """A score's map on the color scale [0, vmax] shared by a figure; returns it (for a colorbar)."""
    return ax.imshow(score_map, cmap="magma", vmin=0, vmax=vmax)


def _map_scale(score_map: np.ndarray) -> float:
    """The top of a figure's shared score-map color scale."""
    peak = float(np.nanmax(score_map)) if score_map.size else 0.0
    return peak if peak > 0 else 1.0


def curve_styles(n: int) -> list[tuple[Any, Any]]:
    """`(color, linestyle)` for `n` curves, every pair different: tab10's ten colors, then tab20's
    lighter shades, each curve also with its own dash pattern (solid, dashed, dash-dot, dotted in
    turn), so that curves stay apart in gray print and for color-blind readers too."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    colors = [*tab20[0::2], *tab20[1::2]]  # the ten strong colors, then their lighter shades
    dashes = ["-", (0, (5, 2)), (0, (6, 2, 1.5, 2)), (0, (1.5, 1.5))]
    return [(colors[i % len(colors)], dashes[(i + i // len(colors)) % len(dashes)]) for i in range(n)]


def _legend_inches(labels: list[str], ncols: int) -> float:
    """The width of a legend of `labels` in `ncols` columns (at the legend's font size, with the
    line samples, their padding, the spacing between columns and the border; matplotlib's defaults)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    size = float(STYLE["legend.fontsize"])
    measure, prop = TextToPath(), FontProperties(size=size)
    text = max((measure.get_text_width_height_descent(label, prop, ismath=False)[0] for label in labels), default=0.0)
    # handlelength 3.2 and handletextpad 0.8 em a column, columnspacing 2.0 em between, borderpad about 1 em
    return (ncols * (text + 4.0 * size) + (ncols - 1) * 2.0 * size + 1.0 * size) / 72


def roc_figure(
    path: Path,
    curves: dict[str, tuple[Distribution, Distribution]],
    aucs: dict[str, float | None],
    title: str,
    width: float = 5.6,
) -> Any:
    """ROC curves in one plot, one per `name: (clean scores, successful adversarials' scores)`
    (their distributions), each in its own color and dash pattern; the legend (AUC and number of
    adversarials) below the axes, where it hides no curve. Returns the (saved) figure."""
    sizes = {adv.n for clean, adv in curves.values() if adv.n and clean.n}
    shared = len(sizes) == 1 and len(curves) > 1  # every curve on as many adversarials: said once, in the title
    if shared:
        title += f"\n{sizes.pop()} successful adversarials each"
    labels = {
        name: (f"{name} (AUC {aucs[name]:.3f})" if shared else f"{name} (AUC {aucs[name]:.3f}, n={adv.n})")
        if adv.n and clean.n else f"{name}: no successful adversarials"
        for name, (clean, adv) in curves.items()
    }  # fmt: skip
    # The legend below the axes, in two columns where they fit, else in one; the figure widens for
    # labels longer than it.
    ncols = 2 if len(curves) > 4 and _legend_inches(list(labels.values()), 2) <= width - 0.1 else 1
    width = max(width, _legend_inches(list(labels.values()), ncols) + 0.1)
    legend_rows = math.ceil((len(curves) + 1) / ncols)
    with _figure(path, figsize=(width, min(width, 5.6) + 0.2 * legend_rows + 0.2 * shared)) as fig:
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls=":", lw=1, color="0.6", label="chance (AUC 0.5)")
        for (name, (clean, adv)), (color, dashes) in zip(curves.items(), curve_styles(len(curves))):
            if adv.n == 0 or clean.n == 0:
                ax.plot([], [], color=color, ls=dashes, lw=2, label=labels[name])
                continue
            fpr, tpr = roc(clean, adv)
            ax.plot(fpr, tpr, color=color, ls=dashes, lw=2, label=labels[name])
        ax.set(
            xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", title=title,
            xlabel="false positive rate (clean images flagged)", ylabel="true positive rate (adversarials flagged)",
        )  # fmt: skip
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=ncols, frameon=False, handlelength=3.2)
    return fig


def auc_heatmap_figure(path: Path, aucs: dict[str, dict[str, float | None]]) -> None:
    """ROC AUC of every detector (rows) on every attack (columns), 0.5 (chance) in the middle of
    the color scale; undefined AUCs (no successful adversarials) in gray."""
    import matplotlib

    detectors = list(aucs)
    attacks = list(dict.fromkeys(a for row in aucs.values() for a in row))
    values = np.ma.masked_invalid(
        np.array([[np.nan if aucs[d].get(a) is None else aucs[d][a] for a in attacks] for d in detectors], dtype=float)
    )
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="0.85")
    width, height = 3.2 + 1.15 * len(attacks), 1.6 + 0.5 * len(detectors)
    with _figure(path, figsize=(width, height)) as fig:
        ax = fig.add_subplot()
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(values.filled(np.nan)):
            text = "–" if np.isnan(value) else f"{value:.3f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if abs(value - 0.5) > 0.4 else "black")
        tilt = len(attacks) > 3 or max(map(len, attacks), default=0) > 12
        ax.set_xticks(range(len(attacks)), attacks, rotation=25 if tilt else 0, ha="right" if tilt else "center")
        ax.set_yticks(range(len(detectors)), detectors)
        ax.set(xlabel="attack", ylabel="detector", title="ROC AUC on the test part")
        fig.colorbar(image, ax=ax, label="AUC (0.5 = chance)", shrink=0.9)


def hist_grid(n: int) -> tuple[int, int]:
    """`(rows, columns)` of `n` histogram panels: up to three a row (four as two by two)."""
    ncols = 2 if n == 4 else max(min(n, 3), 1)
    return math.ceil(n / ncols), ncols


def score_hist_figure(path: Path, clean: Distribution, adversarial: dict[str, Distribution], threshold: float) -> Any:
    """Histograms of the score, clean vs each attack (one panel per attack, all on the same bins
    spanning the scores and the threshold, each with its own tick labels), with the threshold;
    one legend below the panels. Returns the (saved) figure."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = list(adversarial)
    nrows, ncols = hist_grid(len(names))
    clean_counts, bins = clean.hist()
    with _figure(path, figsize=(0.4 + 3.5 * ncols, 0.7 + 2.9 * nrows)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
        for ax, name in zip(axes, names):
            ax.hist(bins[:-1], bins, weights=clean_counts, density=True, alpha=0.55, color=CLEAN_COLOR)
            if adversarial[name].n:
                counts = adversarial[name].hist()[0]
                ax.hist(bins[:-1], bins, weights=counts, density=True, alpha=0.55, color=ADV_COLOR)
            else:
                ax.text(0.5, 0.5, "no successful adversarials", transform=ax.transAxes, ha="center", color=ADV_COLOR)
            ax.axvline(threshold, color="black", ls="--", lw=1)
            ax.set(title=f"{name}: {adversarial[name].n} adversarials", xlabel="score", ylabel="density")
            ax.tick_params(labelbottom=True)  # shared bins, but every panel keeps its tick values
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        handles = [
            Patch(color=CLEAN_COLOR, alpha=0.55, label=f"clean test images (n={clean.n})"),
            Patch(color=ADV_COLOR, alpha=0.55, label="successful adversarials"),
            Line2D([], [], color="black", ls="--", lw=1, label=f"threshold {threshold:.4g}"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=9)
        fig.suptitle("Score distributions on the test part (successful adversarials only)")
    return fig


def example_figure(
    path: Path,
    title: str,
    originals: np.ndarray,
    adversarials: np.ndarray,
    examples: list[Example],
    threshold: float,
    pictures: tuple[Pictures, Pictures] | None,
) -> None:
    """One row per example: original, perturbation, adversarial and, where the detector has
    maps, the clean and adversarial feature responses and their score maps. Perturbations share
    one color scale, and so do all score maps."""
    with_maps = pictures is not None and pictures[0].score_map is not None
    ncols = 3 if pictures is None else (7 if with_maps else 5)
    deltas = adversarials - originals
    peak = float(np.abs(deltas).max()) if deltas.size else 0.0
    span = peak if peak > 0 else 1.0
    notes = [title, f"threshold {threshold:.4g}"]
    if deltas.shape[1] == 3:
        notes[-1] += f"; perturbations shown ×{0.5 / span:.3g} around gray"
    if pictures is None:
        notes.append("this detector has no feature response maps: map panels omitted")
    elif not with_maps:
        notes.append("this detector's score has no map: map panels omitted")
    vmax = _map_scale(np.concatenate([p.score_map for p in pictures])) if with_maps else 1.0  # type: ignore[union-attr,misc]
    with _image_figure(path, len(examples), ncols, 2.1 * ncols, "\n".join(notes)) as (fig, axes):
        map_image = None
        for row, ex in enumerate(examples):
            ax = axes[row]
            _show_image(ax[0], originals[row])
            ax[0].set_title(
                f"{ex.sample_id} (true {ex.label})\nclean: {ex.clean_class} ({percent(ex.clean_confidence)})"
            )
            delta_image = _show_perturbation(ax[1], deltas[row], span)
            ax[1].set_title(f"perturbation\nmax |δ| {float(np.abs(deltas[row]).max()):.3g}")
            _show_image(ax[2], adversarials[row])
            outcome = "succeeded" if ex.success else "failed"
            ax[2].set_title(f"adversarial ({outcome})\npred {ex.adv_class} ({percent(ex.adv_confidence)})",
                            color=ADV_COLOR if ex.success else "black")  # fmt: skip
            if pictures is None:
                continue
            columns = (3, 5) if with_maps else (3, 4)
            for side, column, score in zip(("clean", "adversarial"), columns, (ex.clean_score, ex.adv_score)):
                drawn = pictures[0] if side == "clean" else pictures[1]
                _show_gray(ax[column], drawn.gray[row])
                ax[column].set_title(
                    f"{side} response\nscore {score:.4g}{_flag(score, threshold)}",
                    color=ADV_COLOR if side == "adversarial" and score > threshold else "black",
                )
                if drawn.score_map is not None:
                    map_image = _show_score_map(ax[column + 1], drawn.score_map[row], vmax)
                    ax[column + 1].set_title(f"{drawn.title}\n{side}, mean {float(drawn.score_map[row].mean()):.3f}")
        if delta_image is not None:
            _colorbar(fig, axes[-1, 1], delta_image, "perturbation δ")
        if map_image is not None and pictures is not None:
            for column in (4, 6):
                _colorbar(fig, axes[-1, column], map_image, pictures[0].title)


def _flag(score: float, threshold: float | None) -> str:
    if threshold is None:
        return ""
    return " > thr: flagged" if score > threshold else " ≤ thr: clean"


def explain_panel(path: Path, image: np.ndarray, pictures: Pictures | None, result: dict[str, Any]) -> None:
    """One image, its feature response and its score's map, titled with prediction and score
    (`pictures`: of this one image)."""
    with_map = pictures is not None and pictures.score_map is not None
    ncols = 1 if pictures is None else (3 if with_map else 2)
    name = Path(str(result["image"])).name
    lines = [f"{name}: score {result['score']:.4g} (no threshold; a run directory as model gives a verdict)"]
    if result.get("verdict"):
        lines = [f"{name}: {result['verdict']}", f"score {result['score']:.4g}, threshold {result['threshold']:.4g}"]
    if pictures is None:
        lines.append("this detector has no feature response maps")
    width = 2.6 * ncols + 0.4
    # About 0.1 inch a character at the title's size: wrap rather than run off the figure.
    headline = "\n".join(textwrap.fill(line, max(int(width / 0.1), 20)) for line in lines)
    with _image_figure(path, 1, ncols, width, headline) as (fig, axes):
        axes = axes[0]
        _show_image(axes[0], image)
        axes[0].set_title(f"input\npred {result['class']} ({percent(result['confidence'])})")
        if pictures is not None:
            _show_gray(axes[1], pictures.gray[0])
            axes[1].set_title(
                f"feature response\nscore {result['score']:.4g}{_flag(result['score'], result['threshold'])}"
            )
        if pictures is not None and pictures.score_map is not None:
            score_map = pictures.score_map[0]
            map_image = _show_score_map(axes[2], score_map, _map_scale(score_map))
            axes[2].set_title(f"{pictures.title}\nmean {float(score_map.mean()):.3f}")
            _colorbar(fig, axes[2], map_image, pictures.title)


def write_figures(run: RunData, examples: int = 4) -> dict[str, Any]:
    """Every figure of a finished run into its directory, from the run directory alone (the
    example panels from the images and maps the run stored). Everything is read (and checked)
    before the first figure is written: a broken run directory changes none of its figures.

    Returns `{"roc": file, "score_hist": file, "examples": [{"attack", "file", "examples"}]}`;
    file names are relative to the run directory.
    """
    from ..progress import progress

    tag = TableNames.detector(0)
    clean, adversarial = run.distributions(tag)
    saved, names, map_title = run.examples()
    positions = np.unique(np.concatenate([e.index for e in saved.values()])) if saved else np.zeros(0, np.int64)
    rows = run.example_rows(tag, positions)
    panels = {key: _panel(names, key, saved[key], rows, examples) for key in adversarial if key in saved}
    aucs = {key: m["auc"] for key, m in run.metrics["attacks"].items()}
    threshold = run.threshold(tag)
    out: dict[str, Any] = {"roc": "roc.png", "score_hist": "score_hist.png", "examples": []}
    taken = {"roc", "score_hist"}
    with progress("figures", total=2 + len(adversarial), unit="fig") as advance:
        curves = {attack: (clean, adv) for attack, adv in adversarial.items()}
        roc_figure(run.dir / out["roc"], curves, aucs, f"ROC, test part ({clean.n} clean images)", width=4.8)
        advance(1)
        score_hist_figure(run.dir / out["score_hist"], clean, adversarial, threshold)
        advance(1)
        for key in adversarial:
            if key in panels:
                out["examples"].append(_draw_panel(run.dir, map_title, key, saved[key], *panels[key], threshold, taken))
            advance(1)
    return out


def _panel(names: list[str], key: str, saved: Examples, rows: ExampleRows, n: int) -> tuple[list[int], list[Example]]:
    """The example panel of one attack: which of its saved test images it shows (successful
    adversarials first, at most `n`) and what it says of each; `names`: the model's classes."""

    def at(table: dict[str, np.ndarray], what: str) -> dict[int, int]:
        found = {int(p): i for i, p in enumerate(table["index"])}
        missing = [int(p) for p in saved.index if int(p) not in found]
        if missing:
            raise TracekitError(
                f"the example image at index {missing[0]} of '{key}' has no row in the {what}; "
                "the run directory is broken: run its spec again"
            )
        return found

    attack = rows.attacks[key]
    row, clean, score = (
        at(attack, f"'{key}' tables"),
        at(rows.clean, "clean table"),
        at(rows.clean_scores, "clean scores"),
    )
    try:
        order = sorted(range(len(saved.ids)), key=lambda k: not bool(attack["success"][row[int(saved.index[k])]]))[:n]
        examples = []
        for k in order:
            position = int(saved.index[k])
            r, c = row[position], clean[position]
            examples.append(Example(
                saved.ids[k], names[int(attack["label"][r])],
                names[int(rows.clean["pred"][c])], float(rows.clean["confidence"][c]),
                float(rows.clean_scores["score"][score[position]]),
                names[int(attack["pred"][r])], float(attack["target_confidence"][r]), float(attack["score"][r]),
                bool(attack["success"][r]),
            ))  # fmt: skip
    except IndexError:
        raise TracekitError(
            f"the examples of '{key}' name a class beyond the run's {len(names)} classes; "
            "the run directory is broken: run its spec again"
        ) from None
    return order, examples


def _draw_panel(
    directory: Path,
    map_title: str,
    key: str,
    saved: Examples,
    order: list[int],
    examples: list[Example],
    threshold: float,
    taken: set[str],
) -> dict[str, Any]:
    originals, adversarials = saved.original[order], saved.adversarial[order]
    pictures = None
    if saved.gray is not None:
        drawn, m = Pictures(saved.gray, saved.score_map, map_title), len(saved.ids)
        pictures = (drawn.part(np.asarray(order)), drawn.part(np.asarray(order) + m))
    file = f"examples_{file_stem(key, taken)}.png"
    title = f"{key}: {len(examples)} test image(s), successful adversarials first"
    example_figure(directory / file, title, originals, adversarials, examples, threshold, pictures)
    return {"attack": key, "file": file, "examples": examples}


def write_compare_figures(run: RunData) -> dict[str, Any]:
    """The figures of a comparison into its directory: per attack the ROC curves of every
    detector (clean test vs successful adversarials of that detector), and the AUC heatmap.

    Returns `{"heatmap": file, "rocs": [{"attack", "file"}]}`; file names relative to the directory.
    """
    detectors = run.metrics["detectors"]
    per_detector = {label: run.distributions(TableNames.detector(index)) for index, label in enumerate(detectors)}
    return _comparison_figures(run.dir, {label: entry["attacks"] for label, entry in detectors.items()}, per_detector)


def write_runs_figures(runs: RunsData) -> dict[str, Any]:
    """The figures of finished runs compared side by side, as a comparison's (`write_compare_figures`),
    from the runs' score rows kept in the comparison's `scores.csv`."""
    return _comparison_figures(runs.dir, runs.document["detectors"], runs.scores)


def _comparison_figures(
    directory: Path,
    detectors: dict[str, dict[str, Any]],
    scores: dict[str, tuple[Distribution, dict[str, Distribution]]],
) -> dict[str, Any]:
    """The AUC heatmap of `detectors` (`{label: {attack: metrics}}`) and per attack the ROC curves
    of every detector from `scores` (`{label: (clean test scores, {attack: successful adversarials'
    scores})}`)."""
    from ..progress import progress

    attacks = list(dict.fromkeys(a for per_attack in detectors.values() for a in per_attack))
    out: dict[str, Any] = {"heatmap": "auc_heatmap.png", "rocs": []}
    taken: set[str] = set()
    with progress("figures", total=1 + len(attacks), unit="fig") as advance:
        auc_heatmap_figure(
            directory / out["heatmap"],
            {label: {a: m["auc"] for a, m in per_attack.items()} for label, per_attack in detectors.items()},
        )
        advance(1)
        for attack in attacks:
            curves = {label: (clean, adv[attack]) for label, (clean, adv) in scores.items() if attack in adv}
            aucs = {label: detectors[label][attack]["auc"] for label in curves}
            n_clean = max((clean.n for clean, _ in curves.values()), default=0)
            file = f"roc_{file_stem(attack, taken)}.png"
            roc_figure(
                directory / file,
                curves,
                aucs,
                f"{attack}: ROC per detector, test part ({n_clean} clean images)",
                width=5.4,
            )
            out["rocs"].append({"attack": attack, "file": file})
            advance(1)
    return out


def file_stem(name: str, taken: set[str]) -> str:
    """`name` made safe for a file name (letters, digits, `._-`), unique among `taken` (joined)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate)
    return candidate
