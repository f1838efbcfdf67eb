"""Kernel density and Bayesian uncertainty (Feinman, Curtin, Shintre and Gardner, 2017).

Kernel density (KD): a Gaussian kernel density estimate of the last hidden features (the output of
the model's last hidden layer, see `tracekit.detectors.layers`, or of the module named `layer`,
flattened) of the clean fit images of each class (the model's predicted classes: they are all
correctly classified). An image's KD is the log density of its features under the estimate of its
predicted class (equal to scikit-learn's `KernelDensity.score_samples`, computed in torch on the
device); an image predicted as a class without clean fit images is scored against all of them. A
clean fit image leaves itself out of its own estimate, so that the regression does not learn from
densities inflated by the image's own kernel (the paper fits the estimates on training data and
the regression on other images). The bandwidth depends on the scale of the features: the paper
tuned it per data set (MNIST 1.20, CIFAR-10 0.26, SVHN 1.00).

Bayesian uncertainty (BU), the paper's formula: `mean_t |p_t|^2 - |mean_t p_t|^2` over `n_samples`
stochastic forward passes with dropout on (MC dropout), `p_t` the softmax output. Models with
dropout (modules of rate > 0) get it where their own dropout modules are; models without get
dropout of rate `rate` on the last hidden features, where the paper's models had theirs (a
warning says so once per fit). The masks are drawn per image from its content and `seed`
(`tracekit.detectors.mc_dropout`), so an image's score does not depend on its batch and `detect`
reproduces the run's scores; the model is left as it was (eval mode, no hooks) and torch's
random state untouched.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the stand-in is the score itself, with
autograd through the input (equal forward: the same passes on the same batch). KD is
differentiable in the features; the predicted class that picks the estimate is a discrete choice,
held at the current prediction (the argmax is detached; its gradient is zero anyway). BU is an
expectation over dropout masks, differentiated as such (EOT) with the same `n_samples` passes and
the very masks `score` uses (`tracekit.detectors.mc_dropout.bayesian_uncertainty`, keyed by the
image's content at 8-bit precision and `seed`): the stand-in is the real Monte Carlo estimate,
not a fresh draw of it. As the attack moves the image, its masks change with its content, as the
real score's do. Every pass keeps its graph until the backward pass, so a call holds about
`n_samples + 1` forward passes' activations.

A logistic regression on (KD, BU), trained on clean vs adversarial fit images, gives the score
(`tracekit.detectors.logistic`). Not implemented: the paper's noisy samples (extra negatives).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..protocols import LoadedModel
from .layers import batches, check_hookable, flatten, layer_features, map_batches, model_device, resolve_layers
from .logistic import LogisticCombiner, require_adversarial
from .mc_dropout import bayesian_uncertainty, dropout_modules

WHERE = "detector 'kd-bu'"


def log_kde(
    points: torch.Tensor,
    support: torch.Tensor,
    bandwidth: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log density of `[N,D]` points under a Gaussian KDE on `[M,D]` support points;
    `mask[i, j]` False leaves support point j out of point i's estimate."""
    d2 = torch.cdist(points.double(), support.double()).square()
    log_kernel = -d2 / (2 * bandwidth**2)
    count = torch.full((len(points),), float(len(support)), dtype=torch.float64, device=points.device)
    if mask is not None:
        log_kernel = log_kernel.masked_fill(~mask, -torch.inf)
        count = mask.sum(1).double()
    norm = 0.5 * points.shape[1] * math.log(2 * math.pi * bandwidth**2)
    return torch.logsumexp(log_kernel, 1) - count.log() - norm


class KernelDensityUncertainty:
    """(KD, BU) per image, combined by logistic regression."""

    needs_adversarial_fit = True

    def __init__(
        self, layer: str | None, bandwidth: float, n_samples: int, rate: float, batch_size: int, seed: int
    ) -> None:
        self.layer, self.bandwidth, self.n_samples = layer, bandwidth, n_samples
        self.rate, self.batch_size, self.seed = rate, batch_size, seed
        self.layer_ = ""
        self.support = torch.zeros(0)
        self.support_labels = torch.zeros(0, dtype=torch.long)
        self.combiner = LogisticCombiner()

    def _features(
        self, model: nn.Module, images: torch.Tensor, offset: int | None, differentiable: bool = False
    ) -> torch.Tensor:
        """`[N, 2]` (KD, BU) of one device batch; `offset`: its position among the support images;
        `differentiable`: with autograd through `images` (the predicted class and the dropout masks
        are constants of the graph)."""
        with torch.set_grad_enabled(differentiable):
            (hidden,), logits = layer_features(model, images, [self.layer_], flatten, WHERE)
            preds = logits.detach().argmax(1)
            others = torch.ones(len(images), len(self.support), dtype=torch.bool, device=images.device)
            if offset is not None:
                rows = torch.arange(len(images), device=images.device)
                others[rows, rows + offset] = False
            mask = others & (self.support_labels[None, :] == preds[:, None])
            mask = torch.where(mask.any(1, keepdim=True), mask, others)  # a class without fit images: all
            density = log_kde(hidden, self.support, self.bandwidth, mask)
            uncertainty = bayesian_uncertainty(model, images, self.layer_, self.rate, self.seed, self.n_samples, WHERE)
            return torch.stack([density, uncertainty], 1)

    def features(self, model: nn.Module, images: torch.Tensor, support: bool = False) -> np.ndarray:
        """`[N, 2]` (KD, BU); `support`: `images` are the KDE's own images (each leaves itself out)."""
        return map_batches(
            lambda batch, start: self._features(model, batch, start if support else None),
            images,
            self.batch_size,
            model_device(model),
        )

    def check_model(self, model: LoadedModel) -> None:
        """Its features come from forward hooks on the model's layers (`ModelChecked`)."""
        check_hookable(model.module, None if self.layer is None else [self.layer])

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """KDEs of the clean fit images' last hidden features, then the (KD, BU) regression."""
        adversarial = require_adversarial(adversarial_fit_images, WHERE)
        device = model_device(model)
        sample = clean_fit_images[:2].to(device)
        layers = None if self.layer is None else [self.layer]
        self.layer_ = resolve_layers(model, layers, sample, 1, WHERE)[0]
        if not dropout_modules(model):
            warnings.warn(
                f"{WHERE}: {type(model).__name__} has no dropout; Bayesian uncertainty applies dropout of rate "
                f"{self.rate} to the output of layer '{self.layer_}' during the Monte Carlo passes",
                stacklevel=2,
            )
        hidden, labels = [], []
        with torch.no_grad():
            for batch in batches(clean_fit_images, self.batch_size, device):
                (h,), logits = layer_features(model, batch, [self.layer_], flatten, WHERE)
                hidden.append(h)
                labels.append(logits.argmax(1))
        self.support, self.support_labels = torch.cat(hidden), torch.cat(labels)
        clean = self.features(model, clean_fit_images, support=True)
        self.combiner.fit(clean, self.features(model, adversarial), WHERE)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.combiner.score(self.features(model, images))

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` itself, with autograd through `images` (`DifferentiableScore`; see the module
        docstring), computed on the whole batch at once on the model's device."""
        features = self._features(model, images.to(model_device(model)), None, differentiable=True)
        return self.combiner.decision_torch(features)

    def state_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer_,
            "support": self.support,
            "support_labels": self.support_labels,
            "combiner": self.combiner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layer_, self.support, self.support_labels = str(state["layer"]), state["support"], state["support_labels"]
        self.combiner.load_state_dict(state["combiner"])
