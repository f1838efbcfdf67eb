"""ImageNet class names and WordNet ids, from installed packages only (no download).

Names of ImageNet-1k are torchvision's familiar short names (`tench`, `goldfish`, ...); WordNet
ids (`n01440764`, ...) and the other subsets (`imagenet-22k`, ...) come from timm's
`ImageNetInfo` where the installed timm has it. Both use the standard class order.
"""

from __future__ import annotations

from functools import lru_cache

IMAGENET_1K = "imagenet-1k"


@lru_cache(maxsize=None)
def _timm_info(subset: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """`(wnids, first synonym of each description)` from timm, or None where it has no such list."""
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo(subset)
        wnids = tuple(info.label_names())
        names = tuple(d.split(",")[0].strip() for d in info.label_descriptions())
    except (ImportError, AssertionError, KeyError, OSError, ValueError):
        return None
    return wnids, names


@lru_cache(maxsize=None)
def _torchvision_1k_names() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_classes(subset: str = IMAGENET_1K) -> tuple[list[str], list[str] | None] | None:
    """`(class names, WordNet ids or None)` of an ImageNet subset, or None if no package knows it."""
    timm_lists = _timm_info(subset)
    if subset == IMAGENET_1K:
        return list(_torchvision_1k_names()), list(timm_lists[0]) if timm_lists else None
    if timm_lists is None:
        return None
    wnids, names = timm_lists
    return list(names), list(wnids)
