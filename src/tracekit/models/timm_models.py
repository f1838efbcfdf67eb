"""timm classifiers by name (`timm`), with pretrained weights from the local cache or a file.

`pretrained: true` uses only what is already cached: the Hugging Face hub cache (where timm
keeps the weights of `hf_hub_id`) or the torch hub cache (older `url` weights). Nothing is
downloaded. Either file is loaded the way timm loads pretrained weights
(`pretrained_cfg_overlay={"file": ...}`, weights only). Normalization, input size and
resize ratio come from the model's `pretrained_cfg`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from ..datasets.imagenet_classes import imagenet_classes
from ..errors import TracekitError, did_you_mean
from ..images import DEFAULT_CROP_PCT
from ..protocols import LoadedModel
from .normalize import InputSpec, class_names_for, loaded_model
from .weights import existing_file, sha256, weights_load_error

_HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's names, safest first


def _pretrained_cfg(arch: str) -> Any:
    """timm's pretrained config of `arch` (a name, optionally with a `.tag`; None if it has none).

    Unknown names are refused with the closest known ones.
    """
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(arch):
        raise TracekitError(
            f"unknown timm architecture '{arch}'{did_you_mean(arch, timm.list_models())}; "
            "timm.list_models('pattern*') lists them"
        )
    try:
        return get_pretrained_cfg(arch)
    except RuntimeError:  # a known architecture with an unknown pretrained tag
        tags = timm.list_pretrained(arch.split(".")[0] + ".*")
        raise TracekitError(f"unknown timm weights tag in '{arch}'{did_you_mean(arch, tags)}") from None


def _input_spec(cfg: dict[str, Any]) -> InputSpec:
    return InputSpec(
        tuple(cfg["input_size"]),  # type: ignore[arg-type]
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        crop_pct=float(cfg.get("crop_pct") or DEFAULT_CROP_PCT),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
    )


def _class_names(module: nn.Module, where: str) -> tuple[list[str], list[str] | None, str]:
    """ImageNet names (and WordNet ids) where the model's pretrained config says which subset."""
    try:
        from timm.data import infer_imagenet_subset
    except ImportError:  # timm before ImageNetInfo (0.9.10)
        return class_names_for(module.num_classes, None, where)
    subset = infer_imagenet_subset(module)
    known = imagenet_classes(subset) if subset else None
    if known is not None and len(known[0]) == module.num_classes:
        return known[0], known[1], subset
    return class_names_for(module.num_classes, None, where)


def build(arch: str, num_classes: int | None = None) -> tuple[nn.Module, InputSpec, int]:
    """A randomly initialized `arch`, its input spec and its output count."""
    import timm

    _pretrained_cfg(arch)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    module = timm.create_model(arch, pretrained=False, **kwargs)
    return module, _input_spec(module.pretrained_cfg), int(module.num_classes)


def cached_pretrained_file(arch: str, where: str) -> Path:
    """The cached file of `arch`'s pretrained weights, or an error naming every place looked."""
    import torch.hub

    cfg = _pretrained_cfg(arch)
    hub_id, hub_file, url = (cfg.hf_hub_id, cfg.hf_hub_filename, cfg.url) if cfg else (None, None, None)
    looked: list[str] = []
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        for filename in (hub_file,) if hub_file else _HF_WEIGHTS_FILES:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
            folder = "models--" + repo.replace("/", "--")
            looked.append(str(Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "*" / filename))
    if url:
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if file.is_file():
            return file
        looked.append(str(file))
    if not looked:
        raise TracekitError(f"{where}: timm publishes no pretrained weights for it; use pretrained: false")
    hint = f"`hf download {hub_id}`" if hub_id else url
    raise TracekitError(
        f"{where}: pretrained weights are not in the local cache, and tracekit never downloads; "
        f"looked for {' and '.join(looked)}. Fetch them where there is network ({hint}) and copy "
        "the cache here (HF_HOME / TORCH_HOME), or give the file: weights: /path/to/file"
    )


def _with_weights_file(arch: str, file: Path, where: str) -> nn.Module:
    """`arch` with weights from `file`, loaded as timm loads pretrained weights (no download)."""
    import timm

    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(file)})
    except Exception as exc:  # unreadable file, not plain weights, or keys that do not fit
        raise weights_load_error(file, exc, where) from None


def load_model(arch: str, pretrained: bool, weights: Path | None) -> LoadedModel:
    """The model of the factory `timm_model` (`tracekit.models.factories`)."""
    where = f"timm model '{arch}'"
    if pretrained and weights is not None:
        raise TracekitError(f"{where}: give either pretrained: true or weights: FILE, not both")
    _pretrained_cfg(arch)
    info: dict[str, Any] = {"source": "timm", "arch": arch, "pretrained": pretrained}
    if weights is None and not pretrained:
        module, _, _ = build(arch)
        info["random_init"] = True
    else:
        file = existing_file(weights, where, "weights file") if weights else cached_pretrained_file(arch, where)
        module = _with_weights_file(arch, file, where)
        info.update(weights_file=str(file), sha256=sha256(file))
    names, wnids, info["class_names"] = _class_names(module, where)
    return loaded_model(module, _input_spec(module.pretrained_cfg), names, wnids, info)
