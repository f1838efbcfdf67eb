"""Figure helpers."""

from tracekit.report.distributions import of_arrays


def test_percent_keeps_small_confidences_readable() -> None:
    from tracekit.report.figures import percent

    assert [percent(p) for p in (0.0, 0.0012, 0.01, 0.5, 1.0)] == ["0%", "0.12%", "1%", "50%", "100%"]


def test_curve_styles_tell_every_detector_apart() -> None:
    from tracekit.report.figures import curve_styles

    for n in (2, 5, 11, 20, 25):
        styles = curve_styles(n)
        assert len({(color, str(dashes)) for color, dashes in styles}) == n
    eleven = curve_styles(11)
    assert len({color for color, _ in eleven}) == 11  # 11 detectors: 11 colors, not 10 and a repeat
    assert eleven[0] != eleven[10]


def _drawn(fig):
    """The renderer of `fig` drawn on an Agg canvas (the figures are built without pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_comparison_roc_legend_sits_outside_the_axes(tmp_path) -> None:
    import numpy as np

    from tracekit.report.figures import roc_figure

    rng = np.random.default_rng(0)
    labels = [f"detector-{i}" for i in range(11)]
    curves = {
        label: tuple(of_arrays([rng.normal(size=60), rng.normal(i / 10, size=40)])) for i, label in enumerate(labels)
    }
    fig = roc_figure(tmp_path / "roc.png", curves, {label: 0.5 + i / 25 for i, label in enumerate(labels)}, "t")
    (ax,) = fig.axes
    renderer = _drawn(fig)
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 12  # chance and every detector
    assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    assert legend.get_window_extent(renderer).y1 <= ax.get_tightbbox(renderer).y0 + 1  # below the x label
    lines = ax.get_lines()[1:]
    assert len({(line.get_color(), str(line.get_linestyle())) for line in lines}) == 11


def test_every_histogram_panel_has_tick_values(tmp_path) -> None:
    import numpy as np

    from tracekit.report.figures import DPI, hist_grid, score_hist_figure

    assert [hist_grid(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3), (3, 3)]
    rng = np.random.default_rng(0)
    names = ("fgsm", "gradient", "pixel", "deepfool", "boundary")
    clean, *attacks = of_arrays([rng.normal(size=100), *(rng.normal(0.5, size=30) for _ in names)], [1.2])
    fig = score_hist_figure(tmp_path / "hist.png", clean, dict(zip(names, attacks)), 1.2)
    _drawn(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 5
    for ax in shown:
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert [t.get_text() for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
    width, height = fig.get_size_inches() * DPI
    assert 1000 <= width <= 1240 and height >= 600  # three panels a row, at the report's width, not squeezed
