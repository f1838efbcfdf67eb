"""The CLI contract: exit codes 0 / 2 / 1, one clear line for bad input, never a traceback."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tracekit.cli import build_app

QUICKSTART = str(Path(__file__).parents[2] / "examples" / "quickstart.yaml")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def assert_bad_input(result, *fragments):
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert "error:" in output
    for fragment in fragments:
        assert fragment in " ".join(output.split()), output


def write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return path


def test_validate_ok():
    result = invoke("validate", QUICKSTART)
    assert result.exit_code == 0, result.output
    assert "valid spec" in result.output


def test_validate_show_prints_defaults():
    result = invoke("validate", QUICKSTART, "--show", "--set", "attacks.0.eps=0.02")
    assert result.exit_code == 0, result.output
    assert "eps: 0.02" in result.output and "fit_fraction: 0.5" in result.output


def test_plugins_json_lists_every_builtin_with_distribution():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = {
        "model": {"digits-cnn", "torchvision", "timm", "torchscript", "checkpoint"},
        "dataset": {"digits", "imagefolder", "npz"},
        "attack": {"fgsm", "gradient"},
        "saliency": {"guided-backprop"},
        "score": {"local-entropy"},
        "detector": {"feature-response"},
    }
    for kind, names in expected.items():
        found = {c["name"]: c["distribution"] for c in data["components"][kind]}
        assert names <= set(found), (kind, found)
        assert all(found[n] == "tracekit" for n in names)
    assert all(p["error"] is None for p in data["plugins"] if p["distribution"] == "tracekit")


def test_plugins_table():
    result = invoke("plugins")
    assert result.exit_code == 0 and "guided-backprop" in result.output


def test_missing_spec_file():
    assert_bad_input(invoke("run", "nope.yaml"), "nope.yaml does not exist")


def test_invalid_yaml(tmp_path):
    assert_bad_input(invoke("validate", write(tmp_path, "name: [unclosed\n")), "invalid YAML")


def test_unknown_key(tmp_path):
    spec = yaml.safe_load(Path(QUICKSTART).read_text())
    spec["calibraton"] = spec.pop("calibration")
    assert_bad_input(invoke("run", write(tmp_path, spec)), "calibraton: unknown key", "did you mean 'calibration'")


def test_unknown_component_with_suggestions(tmp_path):
    assert_bad_input(invoke("run", QUICKSTART, "--set", "attacks.0.name=fgsn"), "unknown attack 'fgsn'", "'fgsm'")


def test_wrong_parameter_type():
    assert_bad_input(invoke("validate", QUICKSTART, "--set", "attacks.0.eps=lots"), "attacks.0.eps")


def test_set_on_missing_field():
    assert_bad_input(invoke("validate", QUICKSTART, "--set", "attacks.0.epsilon=0.1"), "unknown parameter", "'eps'")
    assert_bad_input(invoke("validate", QUICKSTART, "--set", "modle.name=x"), "no field 'modle'", "'model'")


def test_missing_weights_file(tmp_path):
    result = invoke("run", QUICKSTART, "--set", f"model.weights={tmp_path / 'missing.pt'}", "--out", tmp_path / "r")
    assert_bad_input(result, "missing.pt")


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    result = invoke(
        "run",
        QUICKSTART,
        "--set",
        "data={name: imagefolder, root: %s}" % (tmp_path / "images"),
        "--out",
        tmp_path / "r",
    )
    assert_bad_input(result, str(tmp_path / "images"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(tmp_path):
    assert_bad_input(invoke("run", QUICKSTART, "--device", "cuda", "--out", tmp_path / "r"), "no CUDA GPU")


def test_unexpected_failure_exit_1(tmp_path, monkeypatch):
    import tracekit.cli.run as run_module

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(run_module, "run_engine", boom)
    result = invoke("run", QUICKSTART, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "kaboom" in result.output and "Traceback" not in result.output


def test_run_writes_run_directory_and_table(testing_plugin, tmp_path):
    spec = {
        "name": "cli-tiny",
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 24},
        "attacks": [{"name": "sign-noise", "eps": 0.3}],
        "detector": {"name": "feature-response", "score": {"name": "mean-abs"}},
    }
    result = invoke("run", write(tmp_path, spec), "--out", tmp_path / "run", "--set", "seed=2")
    assert result.exit_code == 0, result.output
    for name in ("spec.resolved.yaml", "metrics.json", "scores.csv"):
        assert (tmp_path / "run" / name).exists()
    assert "sign-noise" in result.output and "AUC" in result.output
    assert yaml.safe_load((tmp_path / "run" / "spec.resolved.yaml").read_text())["seed"] == 2


def test_commands_show_each_warning_once_as_one_line(capsys):
    import warnings

    from tracekit.cli.common import handle_errors

    @handle_errors
    def noisy() -> str:
        for _ in range(3):
            with warnings.catch_warnings():  # libraries do this; it resets Python's once-per-place memory
                pass
            warnings.warn("detector 'x': something to know", UserWarning, stacklevel=1)
        warnings.warn("another thing", UserWarning, stacklevel=1)
        return "done"

    assert noisy() == "done"
    err = capsys.readouterr().err
    assert err.count("warning: detector 'x': something to know") == 1 and err.count("warning: another thing") == 1
    assert "UserWarning" not in err


def test_version_names_tracekit_torch_and_art():
    import tracekit

    result = invoke("--version")
    assert result.exit_code == 0
    assert (
        result.output.startswith(f"tracekit {tracekit.__version__}, torch ")
        and "adversarial-robustness-toolbox" in result.output
    )


def test_the_summary_caption_mentions_intervals_only_when_there_are_some():
    from rich.console import Console

    from tracekit.cli.run import summary_table

    row = {
        "n_clean": 10, "n_attacked": 5, "success_rate": 0.5, "auc": 0.7, "auc_ci": None,
        "tpr_at_fpr": {"0.01": 0.1, "0.05": 0.2, "0.1": 0.3}, "fpr": 0.05, "seconds": 1.0,
    }  # fmt: skip

    def caption(metrics):
        console = Console(width=300, record=True)
        console.print(summary_table(metrics, "t"))
        return console.export_text()

    plain = caption({"attacks": {"fgsm": row}})
    assert "n_attacked successful adversarials" in plain and "bootstrap" not in plain
    assert "bootstrap" in caption({"attacks": {"fgsm": {**row, "auc_ci": [0.6, 0.8]}}})


def test_plugins_shows_one_components_parameters_with_types_and_defaults():
    shown = invoke("plugins", "model", "checkpoint", "--json")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    params = {p["name"]: p for p in document["parameters"]}
    assert params["path"]["required"] and params["source"]["default"] == "torchvision"
    assert params["crop_pct"]["type"] == "float (> 0, <= 1) | null"
    assert params["source"]["type"] == "'torchvision' | 'timm' | 'python'"
    assert "source: python" in document["doc"]
    table = invoke("plugins", "attack", "pgd")
    assert table.exit_code == 0 and "eps_step" in table.stdout and "float (> 0)" in table.stdout
    only = json.loads(invoke("plugins", "score", "--json").stdout)
    assert list(only["components"]) == ["score"]


def test_plugins_with_an_unknown_kind_or_name_says_the_closest():
    wrong_kind = invoke("plugins", "modle")
    assert wrong_kind.exit_code == 2 and "did you mean 'model'" in wrong_kind.output
    wrong_name = invoke("plugins", "model", "chekpoint")
    assert wrong_name.exit_code == 2 and "checkpoint" in wrong_name.output
