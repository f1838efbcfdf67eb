"""MagNet's detectors (Meng and Chen, "MagNet: a two-pronged defense against adversarial
examples", CCS 2017), the detection part only (not the reformer): an auto-encoder trained on clean
images reconstructs clean inputs well and adversarial ones less well, and the classifier's output
moves more between an adversarial input and its reconstruction.

Auto-encoder: the paper's MNIST detector auto-encoder (its code's `[3, "average", 3]` structure):
`Conv(3x3, 3) -> AvgPool 2 -> Conv(3x3, 3) -> Conv(3x3, 3) -> Upsample 2 (nearest) -> Conv(3x3, 3)
-> Conv(3x3, C)`, every convolution with 'same' (zero) padding and a sigmoid, `C` the images'
channels. The 2x2 pooling and upsampling need even heights and widths: other sizes are refused
before training. It is trained here on the clean fit images (`train_autoencoder`): mean squared
error between the reconstruction of `clip(x + noise * N(0, 1), 0, 1)` and `x`, the noise (`0.1`,
the paper's) drawn once for the whole set before training as in the paper's code; Adam (learning
rate 1e-3), batches of 32 reshuffled every epoch. Glorot-uniform weights and zero biases (the
paper's Keras defaults). A `torch.Generator` seeded with `seed` draws the initial weights, the
noise and the shuffling, so one seed gives bit-identical weights on the CPU (on a GPU, cuDNN's
convolution backward may differ in the last bits between runs). The default `epochs`, 200 (the
paper: 100 epochs over 50,000 MNIST images; here a few hundred fit images, 5 steps an epoch for
150), keeps training on 150 images of 48x48 within about 10 s on one CPU thread (measured on a
shared 2-core machine: 8 to 10 s; 32x32: 5 s); training runs in channels-last memory format,
about twice as fast for these 3-filter convolutions on the CPU. On the digits model, 200 epochs
separate clean from FGSM (0.1) digits clearly better than 100 (AUC 0.92 against 0.78).

Detectors, as the paper's code computes them (its `worker.py`):
- reconstruction error `mean_pixels |x - AE(x)|^p` for `p = 1` and `p = 2` (a mean of powers,
  not a norm: for `p = 2` the mean squared error);
- the Jensen-Shannon divergence (natural log) between `softmax(f(x) / T)` and
  `softmax(f(AE(x)) / T)` of the classifier's logits `f`, at each temperature `T` (the paper's
  CIFAR-10 setting, 10 and 40), computed in float64 from log-softmaxes (no underflow in the logs).

Departures from the paper, and why:
- One score, one threshold. MagNet flags an input when any detector exceeds its own threshold
  (each set for a false positive rate on validation data); tracekit calibrates one threshold on
  one score per image. The score is `max_j (s_j - m_j) / d_j`, with `m_j`, `d_j` the mean and
  standard deviation (population) of detector `j`'s score on the clean fit images: the
  standardization puts the detectors on one scale so that one calibrated threshold serves all,
  and the max keeps "flagged when any detector flags" (a detector far above its clean range
  raises the score whatever the others say). A detector whose clean scores are all equal is
  divided by 1.
- One auto-encoder for all detectors: the paper's MNIST setup pairs the L2 error with this
  auto-encoder and the L1 error with a second one without pooling (`[3]`), and its CIFAR-10 JSD
  detectors use a CIFAR auto-encoder; here the one auto-encoder above serves all four.
- The paper's L2 activity regularization (strength 1e-9, negligible) is left out, and the
  auto-encoder is trained on the clean fit images rather than the training set, with batches of
  32 rather than 256 (the fit sets are small).

Adaptive attacks (`DifferentiableScore.score_for_attack`): every step above is differentiable (the
auto-encoder, the classifier, the errors, the divergences and the max, whose gradient flows through
the arg-max detector), so the stand-in is the score itself with autograd through the input: the
same forward, the exact gradient.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TracekitError
from .layers import map_batches, model_device

WHERE = "detector 'magnet'"
POWERS = (1, 2)  # the reconstruction errors' exponents
FILTERS = 3  # the paper's MNIST detector auto-encoder
TRAIN_BATCH, LEARNING_RATE = 32, 1e-3


def _conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    """A 3x3 'same' convolution with uninitialized parameters (`AutoEncoder.reset` draws them;
    building it leaves torch's global random state alone)."""
    return nn.utils.skip_init(nn.Conv2d, channels_in, channels_out, 3, padding=1)


class AutoEncoder(nn.Module):
    """The paper's MNIST detector auto-encoder for `channels`-channel images of even size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.encoder = nn.Sequential(
            _conv(channels, FILTERS), nn.Sigmoid(), nn.AvgPool2d(2), _conv(FILTERS, FILTERS), nn.Sigmoid()
        )
        self.decoder = nn.Sequential(
            _conv(FILTERS, FILTERS),
            nn.Sigmoid(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(FILTERS, FILTERS),
            nn.Sigmoid(),
            _conv(FILTERS, channels),
            nn.Sigmoid(),
        )

    def reset(self, generator: torch.Generator) -> AutoEncoder:
        """Glorot-uniform weights drawn from `generator` (on the CPU) and zero biases (Keras's
        defaults). Returns itself."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    out, into, kh, kw = module.weight.shape
                    bound = math.sqrt(6.0 / ((into + out) * kh * kw))
                    weight = (torch.rand(module.weight.shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound
                    module.weight.copy_(weight)
                    module.bias.zero_()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def check_even(images: torch.Tensor) -> None:
    """Refuse images the auto-encoder cannot take: not `[N,C,H,W]`, or an odd height or width."""
    if images.dim() != 4:
        raise TracekitError(f"{WHERE}: needs images [N,C,H,W], got shape {list(images.shape)}")
    height, width = images.shape[2:]
    if height % 2 or width % 2:
        raise TracekitError(
            f"{WHERE}: its auto-encoder halves and doubles the image size (2x2 pooling, 2x upsampling), "
            f"so height and width must be even; got {height}x{width}"
        )


def train_autoencoder(images: torch.Tensor, epochs: int, noise: float, seed: int) -> AutoEncoder:
    """A denoising auto-encoder trained on `[N,C,H,W]` images in [0, 1], on their device (see the
    module docstring); returned in eval mode with its parameters frozen."""
    check_even(images)
    channels_last = torch.channels_last  # see the module docstring
    clean = images.detach().to(dtype=torch.float32).contiguous(memory_format=channels_last)
    device = clean.device
    generator = torch.Generator().manual_seed(seed)
    autoencoder = AutoEncoder(clean.shape[1]).reset(generator).to(device, memory_format=channels_last)
    draw = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(device)
    noisy = (clean + noise * draw).clamp(0.0, 1.0).contiguous(memory_format=channels_last)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=LEARNING_RATE)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(clean), generator=generator).to(device)
            for start in range(0, len(clean), TRAIN_BATCH):
                index = order[start : start + TRAIN_BATCH]
                loss = F.mse_loss(autoencoder(noisy[index]), clean[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    autoencoder.to(memory_format=torch.contiguous_format)  # as `load_state_dict` rebuilds it
    return autoencoder.eval().requires_grad_(False)


def jensen_shannon(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """`[N]` float64 Jensen-Shannon divergence (natural log) between `softmax(a / T)` and
    `softmax(b / T)` of `[N, classes]` logits, differentiable."""
    log_p = F.log_softmax(logits_a.double() / temperature, 1)
    log_q = F.log_softmax(logits_b.double() / temperature, 1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(1) + (log_q.exp() * (log_q - log_m)).sum(1))


class MagNet:
    """Max over MagNet's detectors of their score standardized on the clean fit images."""

    needs_adversarial_fit = False

    def __init__(self, temperatures: list[float], epochs: int, noise: float, batch_size: int, seed: int) -> None:
        self.temperatures, self.epochs, self.noise = list(temperatures), epochs, noise
        self.batch_size, self.seed = batch_size, seed
        self.autoencoder: AutoEncoder | None = None
        self.shape: list[int] = []  # [C, H, W] of the fit images
        self.means: list[float] = []
        self.stds: list[float] = []

    def fit(
        self,
        model: nn.Module,
        clean_fit_images: torch.Tensor,
        adversarial_fit_images: torch.Tensor | None = None,
    ) -> None:
        """Train the auto-encoder on the clean fit images (on the model's device), then each
        detector's clean mean and standard deviation."""
        check_even(clean_fit_images)
        if len(clean_fit_images) < 2:
            raise TracekitError(f"{WHERE}: needs at least 2 clean fit images, got {len(clean_fit_images)}")
        device = model_device(model)
        self.autoencoder = train_autoencoder(clean_fit_images.to(device), self.epochs, self.noise, self.seed)
        self.shape = list(clean_fit_images.shape[1:])
        with torch.no_grad():
            raw = map_batches(
                lambda batch, _: self.detector_scores(model, batch), clean_fit_images, self.batch_size, device
            )
        raw = torch.from_numpy(raw)
        self.means = raw.mean(0).tolist()
        self.stds = [s if s > 0 else 1.0 for s in raw.std(0, correction=0).tolist()]

    def detector_scores(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`[N, detectors]` float64 raw detector scores of `images` (on the model's device) under
        the caller's grad mode."""
        autoencoder = self._autoencoder(images)
        reconstructed = autoencoder(images.to(torch.float32)).to(images.dtype)
        difference = images.double() - reconstructed.double()
        errors = [difference.abs().pow(p).mean((1, 2, 3)) for p in POWERS]
        if not self.temperatures:
            return torch.stack(errors, 1)
        logits, logits_reconstructed = model(images), model(reconstructed)
        divergences = [jensen_shannon(logits, logits_reconstructed, t) for t in self.temperatures]
        return torch.stack(errors + divergences, 1)

    def _autoencoder(self, images: torch.Tensor) -> AutoEncoder:
        """The fitted auto-encoder on the images' device, once `images` are checked against the fit's."""
        if self.autoencoder is None:
            raise TracekitError(f"{WHERE}: score before fit (or load_state_dict)")
        if list(images.shape[1:]) != self.shape:
            shape = "x".join(map(str, self.shape))
            raise TracekitError(f"{WHERE}: fitted on images of shape {shape} (CxHxW), got {list(images.shape)}")
        return self.autoencoder.to(images.device)

    def _score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`[N]` combined score of `images` (on the model's device) under the caller's grad mode."""
        raw = self.detector_scores(model, images)
        means = torch.tensor(self.means, dtype=torch.float64, device=raw.device)
        stds = torch.tensor(self.stds, dtype=torch.float64, device=raw.device)
        return ((raw - means) / stds).amax(1)

    def score(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scores = map_batches(
                lambda batch, _: self._score(model, batch), images, self.batch_size, model_device(model)
            )
        return torch.from_numpy(scores)

    def score_for_attack(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """`score` itself with autograd through `images`, on the whole batch at once on the model's
        device (`DifferentiableScore`; see the module docstring)."""
        return self._score(model, images.to(model_device(model)))

    def state_dict(self) -> dict[str, Any]:
        if self.autoencoder is None:
            raise TracekitError(f"{WHERE}: state_dict before fit")
        weights = {k: v.detach().cpu().clone() for k, v in self.autoencoder.state_dict().items()}
        return {
            "autoencoder": weights,
            "shape": list(self.shape),
            "temperatures": list(self.temperatures),
            "means": list(self.means),
            "stds": list(self.stds),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shape = [int(s) for s in state["shape"]]
        self.temperatures = [float(t) for t in state["temperatures"]]
        self.means, self.stds = [float(m) for m in state["means"]], [float(s) for s in state["stds"]]
        autoencoder = AutoEncoder(self.shape[0])
        autoencoder.load_state_dict(state["autoencoder"])
        self.autoencoder = autoencoder.eval().requires_grad_(False)
