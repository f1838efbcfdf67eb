"""Natural scene statistics (Kherchouche, Fezza, Hamidouche and Deforges, "Detection of adversarial
examples in deep neural networks with natural scene statistics", IJCNN 2020): adversarial
perturbations disturb the regular statistics of natural images, which the BRISQUE features (Mittal,
Moorthy and Bovik, "No-reference image quality assessment in the spatial domain", TIP 2012)
measure. Per image: its 36 BRISQUE features, then a radial-basis SVM trained on clean fit (0) vs
adversarial fit (1) images (`tracekit.detectors.svm.RBFMachine`: features standardized, classes
balanced); the score is the SVM's decision function (higher = more likely adversarial). The model
is not used: the features are the input's own.

BRISQUE features (`brisque_features`), as the authors' MATLAB reference computes them: colour
images to gray (ITU-R BT.601 luma, `0.299 R + 0.587 G + 0.114 B`), values in [0, 255]; at each of
2 scales (the image, then the image downsampled by 2):
- MSCN coefficients `(I - mu) / (sigma + 1)`, `mu` and `sigma` the local mean and standard
  deviation under a 7x7 Gaussian window of standard deviation 7/6 (normalized to sum 1), with
  `sigma = sqrt(|E_w[I^2] - mu^2|)`;
- a generalized Gaussian (GGD) fitted to them by moment matching: shape `alpha` and variance
  `E[x^2]` (2 features);
- the products of neighbouring MSCN coefficients in 4 orientations (horizontal, vertical, main
  and secondary diagonal), each fitted by an asymmetric GGD with the reference's moment estimator:
  shape `alpha`, mean `eta = (sigma_r - sigma_l) Gamma(2/alpha) / Gamma(1/alpha) sqrt(Gamma(1/alpha)
  / Gamma(3/alpha))`, left and right variances `sigma_l^2`, `sigma_r^2` (4 x 4 features).
That is 18 features per scale, 36 per image, computed in float64, batched over images.

Where this departs from the reference, and why (all small):
- The shapes: the reference takes the value of the grid `0.2:0.001:10` whose moment ratio
  (`rho(a) = Gamma(1/a) Gamma(3/a) / Gamma(2/a)^2` for the GGD, its inverse against the corrected
  ratio `R_hat` for the AGGD) is nearest the sample's, a step function of the image; here the ratio
  is inverted by linear interpolation between the two grid values around it (`torch.searchsorted`
  then a lerp; ratios outside the grid's range take its end), so the features, and the score, are
  differentiable. The value differs from the nearest grid value by less than one grid step (0.001).
  The real score and the adaptive attacks' stand-in use this same function.
- Borders: the reference filters with zero padding (`filter2(..., 'same')`), which makes the
  local mean drop towards a frame around every image: on 32x32 images a large share of the
  coefficients. Here borders are mirrored with the edge pixel repeated, as
  `scipy.ndimage.correlate(mode="reflect")` does (and `scipy.ndimage.gaussian_filter`'s default,
  which the Python ports of BRISQUE use).
- Neighbour products: the reference pairs coefficients with `circshift`, so each orientation also
  pairs the first row (column) with the last, which are not neighbours; here only pairs inside
  the image are taken.
- Downsampling: the reference uses MATLAB's `imresize(I, 0.5)` (bicubic with antialiasing); here
  `torch.nn.functional.interpolate(scale_factor=0.5, mode="bilinear", antialias=True,
  align_corners=False)`, differentiable and on the images' device. The second scale must be at
  least 8x8, so images must be at least 16x16.
- The SVM: scikit-learn's defaults (`C = 1`, `gamma = "scale"` on standardized features) rather than
  hyperparameters searched on validation data.

Adaptive attacks (`DifferentiableScore.score_for_attack`): the stand-in is the score itself (equal
forward) with autograd through the input: the features above are differentiable everywhere but on
measure-zero sets (the sign of a product, a ratio crossing a grid value). Where the local variance
is below 1e-12 (flat patches), its square root is taken at 1e-12 (its gradient there is infinite);
the value moves by at most 1e-6 against the `+ 1` of the MSCN denominator.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TracekitError
from .logistic import require_adversarial
from .svm import RBFMachine

WHERE = "detector 'nss'"
WINDOW, WINDOW_SIGMA = 7, 7 / 6
MIN_SIDE = 16  # the downsampled scale is at least 8x8
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
TINY = 1e-12


@lru_cache(maxsize=1)
def _shape_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's shape grid `0.2:0.001:10`, `1 / rho(a)` along it (ascending: the AGGD's
    table, as the reference's) and `rho(a)` reversed (ascending: the GGD's, along the reversed grid)."""
    alphas = torch.arange(200, 10001, dtype=torch.float64) / 1000
    log_rho = torch.lgamma(1 / alphas) + torch.lgamma(3 / alphas) - 2 * torch.lgamma(2 / alphas)
    return alphas, torch.exp(-log_rho), torch.exp(log_rho).flip(0)


def _invert(ratio: torch.Tensor, table: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """The shape whose tabulated ratio (`table`, ascending, one per `alphas`) is `ratio`: linear
    interpolation between the two grid points around it, clamped to the grid's ends."""
    ratio = ratio.clamp(table[0], table[-1])
    upper = torch.searchsorted(table, ratio.detach().contiguous()).clamp(1, len(table) - 1)
    low, high = table[upper - 1], table[upper]
    return alphas[upper - 1] + (ratio - low) / (high - low) * (alphas[upper] - alphas[upper - 1])


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(alphas, 1/rho)` ascending for the AGGD and `(alphas reversed, rho)` ascending for the GGD."""
    alphas, inverse_rho, rho_ascending = (t.to(device) for t in _shape_tables())
    return alphas, inverse_rho, alphas.flip(0), rho_ascending


def ggd_shape(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N, M] -> (alpha [N], variance [N])`: the GGD fitted to each row by moment matching
    (`r = E[x^2] / E[|x|]^2`, `alpha = rho^-1(r)` interpolated, variance `E[x^2]`)."""
    _, _, alphas, rho = _tables(values.device)
    variance = values.square().mean(1)
    ratio = variance / values.abs().mean(1).square().clamp_min(TINY)
    return _invert(ratio, rho, alphas), variance


def aggd_parameters(values: torch.Tensor) -> torch.Tensor:
    """`[N, M] -> [N, 4]`: the AGGD fitted to each row by the reference's moment estimator:
    `alpha`, the mean `eta`, the left and right variances (of the negative and positive values)."""
    alphas, inverse_rho, _, _ = _tables(values.device)
    square = values.square()
    negative, positive = (values < 0).to(values.dtype), (values > 0).to(values.dtype)
    left_var = (square * negative).sum(1) / negative.sum(1).clamp_min(1)
    right_var = (square * positive).sum(1) / positive.sum(1).clamp_min(1)
    left, right = left_var.clamp_min(TINY).sqrt(), right_var.clamp_min(TINY).sqrt()
    gamma_hat = left / right
    r_hat = values.abs().mean(1).square() / square.mean(1).clamp_min(TINY)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = _invert(r_norm, inverse_rho, alphas)
    log_ratio = torch.lgamma(2 / alpha) - 0.5 * torch.lgamma(1 / alpha) - 0.5 * torch.lgamma(3 / alpha)
    eta = (right - left) * torch.exp(log_ratio)
    return torch.stack([alpha, eta, left_var, right_var], 1)


def gaussian_window(device: torch.device) -> torch.Tensor:
    """The 1-D factor `[7]` of the 7x7 Gaussian window (sigma 7/6, the 2-D window sums to 1)."""
    offsets = torch.arange(WINDOW, dtype=torch.float64, device=device) - WINDOW // 2
    weights = torch.exp(-(offsets**2) / (2 * WINDOW_SIGMA**2))
    return weights / weights.sum()


def _local_mean(images: torch.Tensor) -> torch.Tensor:
    """`[N,1,H,W]` filtered by the Gaussian window, borders mirrored with the edge repeated
    (`scipy.ndimage.correlate(mode="reflect")`), as two 1-D passes."""
    g = gaussian_window(images.device)
    p = WINDOW // 2
    x = torch.cat([images[..., :p].flip(-1), images, images[..., -p:].flip(-1)], -1)
    x = F.conv2d(x, g.view(1, 1, 1, WINDOW))
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], -2)
    return F.conv2d(x, g.view(1, 1, WINDOW, 1))


def mscn(gray: torch.Tensor) -> torch.Tensor:
    """`[N,1,H,W]` gray images (0..255) -> their MSCN coefficients `(I - mu) / (sigma + 1)`."""
    mu = _local_mean(gray)
    variance = (_local_mean(gray.square()) - mu.square()).abs()
    return (gray - mu) / (variance.clamp_min(TINY).sqrt() + 1)


def _scale_features(gray: torch.Tensor) -> torch.Tensor:
    """`[N,1,H,W]` gray images (0..255) -> `[N, 18]`: the GGD's 2 and 4 orientations' AGGD's 4."""
    m = mscn(gray)[:, 0]
    alpha, variance = ggd_shape(m.flatten(1))
    pairs = (
        m[:, :, :-1] * m[:, :, 1:],  # horizontal
        m[:, :-1, :] * m[:, 1:, :],  # vertical
        m[:, :-1, :-1] * m[:, 1:, 1:],  # main diagonal
        m[:, 1:, :-1] * m[:, :-1, 1:],  # secondary diagonal
    )
    return torch.cat([torch.stack([alpha, variance], 1)] + [aggd_parameters(p.flatten(1)) for p in pairs], 1)


def check_images(images: torch.Tensor, where: str = WHERE) -> None:
    """A `TracekitError` unless `images` is `[N, 1 or 3, H, W]` with `H, W >= 16`."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise TracekitError(
            f"{where}: BRISQUE features need [N, 1 or 3, H, W] images (gray or RGB), got shape {list(images.shape)}"
        )
    h, w = images.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise TracekitError(
            f"{where}: BRISQUE features need images of at least {MIN_SIDE}x{MIN_SIDE} pixels (8x8 after "
            f"downsampling by 2), got {h}x{w}"
        )


def brisque_features(images: torch.Tensor, where: str = WHERE) -> torch.Tensor:
    """`[N,C,H,W]` images in [0, 1] (C = 1 gray or 3 RGB) -> `[N, 36]` BRISQUE features, float64 on
    their device, with autograd through `images` (see the module docstring). `where` begins the
    message of a `TracekitError` for images that are not `[N, 1 or 3, H >= 16, W >= 16]`."""
    check_images(images, where)
    x = images.double() * 255
    if x.shape[1] == 3:
        x = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    return torch.cat([_scale_features(x), _scale_features(small)], 1)


class NaturalSceneStatistics:
    """BRISQUE features of the input, then an RBF SVM (clean 0, adversarial 1); score = its decision."""

    needs_adversarial_fit = True

    def __init__(self, batch_size: int = 128) -> None:
        self.batch_size = batch_size
        self.machine = RBFMachine()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`[N, 36]` BRISQUE features without autograd, in batches, float64 on the images' device."""
        check_images(images)
        with torch.no_grad():
            return torch.cat([brisque_features(b) for b in images.split(self.batch_size)])

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """The SVM on the clean (0) and adversarial (1) fit images' features (the model is unused)."""
        adversarial = require_adversarial(adversarial_fit_images, WHERE)
        clean_rows, adversarial_rows = self.features(clean_fit_images), self.features(adversarial)
        rows = torch.cat([clean_rows, adversarial_rows.to(clean_rows.device)]).cpu().numpy()
        labels = np.repeat([0, 1], [len(clean_rows), len(adversarial_rows)])
        self.machine = RBFMachine().fit(rows, labels, WHERE)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The SVM's decision on `images`' features, `[N]` float64 on their device."""
        with torch.no_grad():
            return self.machine.decision_torch(self.features(images))

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` itself with autograd through `images` (`DifferentiableScore`), the whole batch at once."""
        return self.machine.decision_torch(brisque_features(images))

    def state_dict(self) -> dict[str, Any]:
        return self.machine.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.machine = RBFMachine().load_state_dict(state)
