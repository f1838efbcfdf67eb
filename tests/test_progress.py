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
