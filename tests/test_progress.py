import io

from rich.console import Console

from tracekit import progress


def run_bar(monkeypatch, terminal: bool, keep: bool) -> str:
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=terminal, width=80))
    monkeypatch.setattr(progress, "_enabled", True)
    with progress.progress("attack fgsm", total=4, keep=keep) as advance:
        advance(4)
    return out.getvalue()


def test_kept_bars_are_logged_when_piped(monkeypatch):
    assert "attack fgsm" in run_bar(monkeypatch, terminal=False, keep=True)
    assert "4/4" in run_bar(monkeypatch, terminal=False, keep=True)


def test_vanishing_bars_leave_nothing_in_a_log(monkeypatch):
    assert run_bar(monkeypatch, terminal=False, keep=False) == ""


def test_vanishing_bars_show_on_a_terminal(monkeypatch):
    assert "attack fgsm" in run_bar(monkeypatch, terminal=True, keep=False)


def test_disabled_bars_are_silent(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=True))
    monkeypatch.setattr(progress, "_enabled", False)
    with progress.progress("quiet", total=2, keep=True) as advance:
        advance(2)
    assert out.getvalue() == ""


def test_slow_steps_still_show_a_rate_and_the_time_left():
    """A search attack's chunks can take longer than rich's 30 s speed window: the bar then shows the
    mean rate since it started (work already done before it started left out) and the time left."""
    from rich.progress import Progress

    now = [0.0]
    bar = Progress(get_time=lambda: now[0])
    task_id = bar.add_task("attack pixel", total=10, completed=2, already=2)
    now[0] = 40.0
    bar.advance(task_id, 4)
    task = bar.tasks[0]
    assert task.speed is None  # rich's own estimate has nothing to go on
    assert progress._RateColumn("img").render(task).plain == "0.1 img/s"  # 4 images in 40 s
    assert progress._RemainingColumn().render(task).plain == "0:00:40"  # 4 images left at 0.1/s
