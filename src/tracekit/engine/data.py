"""Collecting a dataset into tensors, predicting in batches, and the honest fit/test split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TracekitError
from ..progress import progress
from ..protocols import Dataset, LoadedModel


@dataclass
class Samples:
    """Images of one dataset, in the order the dataset yielded them."""

    ids: list[str]
    images: torch.Tensor  # [N,C,H,W] in [0, 1], on the CPU
    labels: torch.Tensor  # [N] long

    def __len__(self) -> int:
        return len(self.ids)


def collect(dataset: Dataset, model: LoadedModel, where: str = "data") -> Samples:
    """All samples of `dataset`, checked against the model's input."""
    ids: list[str] = []
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for sample_id, image, label in dataset.samples(model):
        ids.append(str(sample_id))
        images.append(image.float())
        labels.append(int(label))
    if not ids:
        raise TracekitError(f"{where}: the dataset has no images; check its path, split or limit")
    if len(set(ids)) != len(ids):
        raise TracekitError(f"{where}: the dataset yields duplicate sample ids; ids must be unique")
    stacked = torch.stack(images)
    if tuple(stacked.shape[1:]) != tuple(model.input_size):
        raise TracekitError(
            f"{where}: images are {tuple(stacked.shape[1:])} but the model expects {tuple(model.input_size)}"
        )
    bad = [label for label in labels if not 0 <= label < model.num_classes]
    if bad:
        raise TracekitError(f"{where}: label {bad[0]} is outside the model's {model.num_classes} classes")
    return Samples(ids, stacked, torch.tensor(labels, dtype=torch.long))


@torch.no_grad()
def predict(
    module: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, description: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(predicted class [N], softmax probabilities [N,K])`, on the CPU."""
    preds, probs = [], []
    with progress(description or "predicting", total=len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            p = torch.softmax(module(batch).float(), dim=1)
            preds.append(p.argmax(1).cpu())
            probs.append(p.cpu())
            advance(len(batch))
    return torch.cat(preds), torch.cat(probs)


def split_fit_test(indices: torch.Tensor, fit_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded shuffle of `indices` into a fit part and a test part (both sorted)."""
    gen = torch.Generator().manual_seed(seed)
    shuffled = indices[torch.randperm(len(indices), generator=gen)]
    n_fit = int(round(len(indices) * fit_fraction))
    if len(indices) >= 2:
        n_fit = min(max(n_fit, 1), len(indices) - 1)
    fit, test = shuffled[:n_fit], shuffled[n_fit:]
    if len(test) == 0 or len(fit) == 0:
        raise TracekitError(
            f"only {len(indices)} correctly classified image(s): too few to split into fit and test parts; "
            "use more images (data.limit) or a better model"
        )
    return fit.sort().values, test.sort().values
