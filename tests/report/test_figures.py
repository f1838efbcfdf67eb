"""Figure helpers."""


def test_percent_keeps_small_confidences_readable() -> None:
    from tracekit.report.figures import percent

    assert [percent(p) for p in (0.0, 0.0012, 0.01, 0.5, 1.0)] == ["0%", "0.12%", "1%", "50%", "100%"]
