"""The one-pixel attack (Su et al.) as a native batched differential evolution (`pixel` with
`backend: native`): the candidates of every image of a batch are evaluated together, in forward
passes of `eval_batch` candidate images on the model's device, with no NumPy round trip.

The search is ART's (`PixelAttack`, itself SciPy's `differential_evolution`), vectorized:
- a candidate is `pixels` (row, column, value per channel) tuples; a pixel's values are 8-bit
  levels (`floor(v) / 255`), its position `floor` of the coordinate, as ART reads them;
- the population holds `max(1, 400 // D) * D` candidates per image (D = the candidate's length:
  400 for one RGB pixel), initialized by Latin hypercube sampling over the bounds;
- each generation makes one trial per candidate by `best1bin` with recombination 1: the image's
  best candidate plus F times the difference of two others (F drawn in [0.5, 1) per generation,
  "dithering"); a trial component outside its bounds is drawn anew inside them; a trial replaces
  its candidate when its fitness (the true class's probability) is lower.
  Unlike SciPy's default ("immediate" updating, candidate after candidate), the whole generation's
  trials are judged together ("deferred" updating, SciPy's other mode): that is what lets a batch
  of images x the population go through the model at once;
- the paper's stopping rule: an image is done when its best candidate is misclassified with the
  true class's probability below `stop_probability`; a search that ends with its best candidate
  misclassified at some generation, but never below that probability, keeps the first such
  candidate (as tracekit's ART subclass does); an image never misclassified comes back unchanged.

Every random number is drawn per image from its seed (the engine's, from the run seed and the
image's id) with a counter-based hash (`tracekit.counters`), so an image's evolution is the same
alone or in any batch. `scale` searches the coarse view's pixels, as the ART backend does
(`pixel.py`): the change of a coarse pixel reaches the input upsampled bilinearly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..counters import uniforms
from ..errors import TracekitError
from .native import BatchedSearch

POPULATION = 400  # ART's: popsize = max(1, 400 // D) candidates per dimension
_INIT, _STRATA, _DITHER, _PICK_A, _PICK_B, _REDRAW = range(6)  # `uniforms` sites, one per purpose


class NativeOnePixel(BatchedSearch):
    """One-pixel differential evolution over whole batches (see the module's docstring)."""

    def __init__(self, pixels: int, max_iter: int, stop_probability: float, scale: int, eval_batch: int | None) -> None:
        """`eval_batch` None: 4096 candidate images per forward pass on a GPU, 128 on a CPU (where
        small batches stay in cache; `benchmarks/attacks.py --only pixel` times the attack)."""
        super().__init__(eval_batch)
        self.pixels, self.max_iter, self.stop_probability = pixels, max_iter, stop_probability
        self.scale = scale

    def check(self, input_size: tuple[int, ...]) -> None:
        check_grid(input_size, self.scale, self.pixels)

    def search(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return _Evolution(self, model, x, labels, seeds).run()


class _Evolution:
    """One batch's evolution: populations `[B, P, D]` in parameter units, fitness `[B, P]`."""

    def __init__(
        self, attack: NativeOnePixel, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor
    ):
        self.attack, self.model, self.x, self.labels, self.seeds = attack, model, x, labels, seeds
        n, channels, height, width = x.shape
        self.rows, self.cols = height // attack.scale, width // attack.scale
        self.low = F.avg_pool2d(x, attack.scale) if attack.scale > 1 else x
        per_pixel = torch.tensor([self.rows, self.cols] + [256.0] * channels, device=x.device, dtype=torch.float64)
        self.upper = per_pixel.repeat(attack.pixels)  # [D]: parameters lie in [0, upper)
        self.dims = len(self.upper)
        self.size = max(1, POPULATION // self.dims) * self.dims
        self.channels = channels

    def _uniforms(self, site: int, draw: int, size: int, which: torch.Tensor) -> torch.Tensor:
        return uniforms(self.seeds[which], size, 0, site, draw)

    def run(self) -> torch.Tensor:
        n, p, d = len(self.x), self.size, self.dims
        everyone = torch.arange(n, device=self.x.device)
        # Latin hypercube: per image and dimension, one sample in each of the P strata, shuffled.
        order = self._uniforms(_STRATA, 0, p * d, everyone).view(n, p, d).argsort(dim=1)
        offset = self._uniforms(_INIT, 0, p * d, everyone).view(n, p, d)
        population = (order + offset) / p * self.upper
        fitness, wrong = self._evaluate(everyone, population)
        done = torch.zeros(n, dtype=torch.bool, device=self.x.device)
        fooled = torch.zeros(n, dtype=torch.bool, device=self.x.device)
        fooling = torch.zeros(n, d, dtype=population.dtype, device=self.x.device)
        done, fooled = self._judge(everyone, population, fitness, wrong, done, fooled, fooling)
        picks = torch.arange(p, device=self.x.device)
        for generation in range(1, self.attack.max_iter + 1):
            active = (~done).nonzero()[:, 0]
            if not len(active):
                break
            pop, fit = population[active], fitness[active]
            best = pop[torch.arange(len(active)), fit.argmin(1)]  # [A, D]
            scale = 0.5 + 0.5 * self._uniforms(_DITHER, generation, 1, active)  # [A, 1]
            a = (self._uniforms(_PICK_A, generation, p, active) * (p - 1)).long()
            a = a + (a >= picks)  # a != i
            b = (self._uniforms(_PICK_B, generation, p, active) * (p - 2)).long()
            low, high = torch.minimum(a, picks), torch.maximum(a, picks)
            b = b + (b >= low)
            b = b + (b >= high)  # b != i, a
            rows = torch.arange(len(active), device=self.x.device)[:, None]
            trial = best[:, None, :] + scale[:, :, None] * (pop[rows, a] - pop[rows, b])
            redraw = self._uniforms(_REDRAW, generation, p * d, active).view(len(active), p, d) * self.upper
            outside = (trial < 0) | (trial >= self.upper)
            trial = torch.where(outside, redraw, trial)
            trial_fitness, trial_wrong = self._evaluate(active, trial)
            better = trial_fitness < fit
            population[active] = torch.where(better[..., None], trial, pop)
            fitness[active] = torch.where(better, trial_fitness, fit)
            wrong[active] = torch.where(better, trial_wrong, wrong[active])
            done, fooled = self._judge(active, population, fitness, wrong, done, fooled, fooling)
        best = population[everyone, fitness.argmin(1)]
        chosen = torch.where((fooled & ~done)[:, None], fooling, best)
        adversarial = self._perturb(everyone, chosen)
        success = done | fooled
        return torch.where(success[:, None, None, None], adversarial, self.x)

    def _judge(
        self,
        which: torch.Tensor,
        population: torch.Tensor,
        fitness: torch.Tensor,
        wrong: torch.Tensor,
        done: torch.Tensor,
        fooled: torch.Tensor,
        fooling: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """After a generation: each image's best candidate misclassified? below the stop probability?"""
        index = fitness[which].argmin(1)
        best_wrong = wrong[which, index]
        first = best_wrong & ~fooled[which]
        fooling[which[first]] = population[which[first], index[first]]
        fooled = fooled.clone()
        fooled[which] |= best_wrong
        done = done.clone()
        done[which] |= best_wrong & (fitness[which, index] < self.attack.stop_probability)
        return done, fooled

    def _perturb(self, which: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Image `which[m]` changed by candidate `candidates[m]` (`[M, D]`), for each m: `[M, C, H, W]`."""
        m = len(which)
        params = candidates.floor().long().view(m, self.attack.pixels, 2 + self.channels)
        row = params[..., 0].clamp(0, self.rows - 1)
        col = params[..., 1].clamp(0, self.cols - 1)
        values = params[..., 2:].clamp(0, 255).to(self.x.dtype) / 255  # [M, pixels, C]
        low = self.low[which].clone()  # [M, C, h, w]
        position = (row * self.cols + col)[:, None, :].expand(m, self.channels, self.attack.pixels)
        low.view(m, self.channels, -1).scatter_(2, position, values.transpose(1, 2))
        if self.attack.scale == 1:
            return low
        change = F.interpolate(low - self.low[which], size=self.x.shape[-2:], mode="bilinear", align_corners=False)
        return (self.x[which] + change).clamp(0, 1)

    def _evaluate(self, which: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (true class's probability) and misclassification of candidates `[A, K, D]` of
        the images `which`, `eval_batch` candidate images per forward pass."""
        a, k, d = candidates.shape
        owner = which.repeat_interleave(k)
        flat = candidates.reshape(a * k, d)
        fitness, wrong = [], []
        for start in range(0, a * k, self.attack.eval_batch):
            part = owner[start : start + self.attack.eval_batch]
            images = self._perturb(part, flat[start : start + self.attack.eval_batch])
            probs = torch.softmax(self.model(images).float(), dim=1)
            labels = self.labels[part]
            fitness.append(probs.gather(1, labels[:, None])[:, 0].double())
            wrong.append(probs.argmax(1) != labels)
            self.attack.evaluations += len(images)
        return torch.cat(fitness).view(a, k), torch.cat(wrong).view(a, k)


def check_grid(input_size: tuple[int, ...], scale: int, pixels: int) -> None:
    """Refuse a `scale` that does not divide the images' height and width, and more `pixels`
    than the searched grid has."""
    height, width = input_size[-2:]
    if height % scale or width % scale:
        raise TracekitError(
            f"attack 'pixel': scale {scale} does not divide the {height}x{width} images; "
            "use a scale that divides both sides (scale: 1 searches the input's own pixels)"
        )
    grid = (height // scale) * (width // scale)
    if pixels > grid:
        raise TracekitError(
            f"attack 'pixel': pixels {pixels} is more than the {grid} pixels of the "
            f"{height // scale}x{width // scale} grid searched at scale {scale}; "
            f"use at most {grid} (the paper changes 1)"
        )


def evaluations_per_image(max_iter: int, pixels: int, channels: int) -> int:
    """The most candidate images one image costs: the initial population and one per generation."""
    dims = pixels * (2 + channels)
    return max(1, POPULATION // dims) * dims * (1 + max_iter)
