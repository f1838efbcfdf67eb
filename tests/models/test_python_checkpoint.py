"""`checkpoint` with `source: python`: any nn.Module a callable builds, its state dict loaded with
weights_only=True; one clear error for each way it fails; code named by a run directory is
imported only when the user trusts it."""

import json
import shutil
import textwrap

import pytest
import torch
import yaml

import tracekit
from tracekit import plugins
from tracekit.errors import TracekitError
from tracekit.models.factories import checkpoint_model
from tracekit.testing import testing_plugin

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=8, classes=4):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3, padding=1)
            self.head = nn.Linear(width, classes)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean((2, 3)))

    def build(width=8, classes=4):
        return Net(width, classes)

    def broken(width=8):
        raise RuntimeError("no GPU here")

    def not_a_module():
        return "hello"

    NOT_CALLABLE = 3
    """
)
EVIL = textwrap.dedent(
    """
    import os
    import pathlib

    pathlib.Path(os.environ["TRACEKIT_TEST_EVIL"]).write_text("imported")  # what shared code could do


    def build():
        pass
    """
)


MISMATCH = r"does not fit the model: 3 size mismatches \(conv.weight: file \[8, 1, 3, 3\], model \[4, 1, 3, 3\]"


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A package of the user's, on the path, and a state dict of `build(width=8)`."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tracekit_user_nets.py").write_text(NETS)
    (tmp_path / "code" / "tracekit_user_evil.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.setenv("TRACEKIT_TEST_EVIL", str(tmp_path / "evil-ran"))
    import tracekit_user_nets

    torch.manual_seed(0)
    net = tracekit_user_nets.build(width=8).eval()
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_a_callables_module_with_its_weights(nets):
    net, path = nets
    loaded = checkpoint_model(path, "tracekit_user_nets:build", source="python", input_size=(1, 16, 16), kwargs={})
    assert loaded.class_names == ["class0", "class1", "class2", "class3"] and loaded.input_size == (1, 16, 16)
    assert loaded.info["arch_source"] == "python" and loaded.info["crop_pct"] == 1.0 and loaded.info["mean"] is None
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net(x))


@pytest.mark.parametrize(
    ("arch", "params", "said"),
    [
        ("tracekit_user_nets.build", {}, r"arch is 'package.module:Callable'"),
        ("tracekit_no_such_package:build", {}, r"cannot import tracekit_no_such_package \(No module named"),
        ("tracekit_user_nets:nope", {}, r"tracekit_user_nets has no 'nope'"),
        ("tracekit_user_nets:NOT_CALLABLE", {}, r"is a int, not a callable"),
        ("tracekit_user_nets:not_a_module", {}, r"returned a str, not a torch.nn.Module"),
        ("tracekit_user_nets:broken", {}, r"broken\(\*\*kwargs\) failed \(no GPU here\)"),
        ("tracekit_user_nets:build", {"kwargs": {"depth": 3}}, r"failed .*unexpected keyword argument 'depth'"),
        ("tracekit_user_nets:build", {"kwargs": {"width": 4}}, MISMATCH),
        ("tracekit_user_nets:build", {"input_size": None}, r"give input_size"),
    ],
)
def test_each_way_it_fails_is_one_clear_error(nets, arch, params, said):
    _, path = nets
    given = {"source": "python", "input_size": (1, 16, 16), **params}
    with pytest.raises(TracekitError, match=said):
        checkpoint_model(path, arch, **given)


def test_kwargs_are_for_python_sources_only(nets):
    with pytest.raises(TracekitError, match="kwargs are for source: python"):
        checkpoint_model(nets[1], "resnet18", kwargs={"width": 3})


@pytest.mark.slow
def test_a_run_directory_imports_its_code_only_when_trusted(nets, tmp_path):
    _, path = nets
    model = {"name": "checkpoint", "path": str(path), "arch": "tracekit_user_nets:build", "source": "python"}
    spec = {
        "name": "python-model",
        "device": "cpu",
        "model": {**model, "input_size": [1, 16, 16]},
        "data": {"name": "random-images", "n": 24},
        "attacks": [{"name": "sign-noise", "eps": 0.2}],
        "evaluation": {"bootstrap": 0},
        "batch_size": 8,
    }
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    try:
        result = tracekit.run(spec, out=tmp_path / "run")
    finally:
        plugins.unregister_plugin("tracekit-testing")
    image = torch.rand(1, 16, 16)
    with pytest.raises(TracekitError, match=r"built by Python code \(tracekit_user_nets:build\).*--trust-code"):
        tracekit.detect(result.out_dir, [image])
    (row,) = tracekit.detect(result.out_dir, [image], trust_code=True)
    assert row["error"] is None and row["verdict"] in ("clean", "adversarial")

    shared = tmp_path / "shared"  # a run directory from someone else, naming code that acts on import
    shutil.copytree(result.out_dir, shared)
    for name, load, dump in (
        ("detector.json", json.loads, json.dumps),
        ("spec.resolved.yaml", yaml.safe_load, yaml.safe_dump),
    ):
        data = load((shared / name).read_text())
        data["model"]["arch"] = "tracekit_user_evil:build"
        (shared / name).write_text(dump(data))
    with pytest.raises(TracekitError, match="--trust-code"):
        tracekit.detect(shared, [image])
    plugins.register_plugin(testing_plugin, "tracekit-testing")  # the run's data and attack, for its spec
    try:
        tracekit.rebuild_report(shared)
    finally:
        plugins.unregister_plugin("tracekit-testing")
    assert not (tmp_path / "evil-ran").exists()
