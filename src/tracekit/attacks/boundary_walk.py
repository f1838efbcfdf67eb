"""The boundary attack (Brendel et al.) as a native batched walk (`boundary` with `backend:
native`): every image of a batch steps at once, its candidates evaluated together in forward
passes of `eval_batch` images on the model's device, with no NumPy round trip.

Step for step ART's `BoundaryAttack` (untargeted, as tracekit's ART backend runs it):
- start: the first of up to `init_size` uniform-noise images the model misclassifies (drawn
  `batch_size` at a time); an image without one comes back unchanged;
- each of `max_iter` iterations, per image: an orthogonal step, up to `num_trial` tries of
  `sample_size` candidates `x + (ART's spherical perturbation of size delta * |x - original|)`,
  clipped; delta shrinks by `step_adapt` when under 20% of them stay adversarial and grows when
  over 50%; then a step towards the original, up to `num_trial` tries moving the adversarial
  candidates by epsilon of their distance, epsilon adapted the same way; the adversarial one
  nearest the original (L2) is the new point. An image whose tries all fail stops where it is
  (ART's "found but not optimal"), as does one whose epsilon falls below `min_epsilon`.
Each image keeps its own delta and epsilon, and only the candidates ART would evaluate are
evaluated (in the towards-original step, only the orthogonal step's adversarial ones).

Every random number is drawn per image from its seed (the engine's, from the run seed and the
image's id) with a counter-based hash (`tracekit.counters`; normals by Box-Muller on 16-bit
uniforms, a cosine and a sine per word), so an
image's walk is the same alone or in any batch. ART draws from NumPy's global state instead: the
two backends take different random walks of the same kind.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..counters import uniforms, words
from .native import BatchedSearch

_NOISE, _NORMAL = range(2)  # `uniforms` sites


class NativeBoundary(BatchedSearch):
    """Brendel et al.'s boundary attack over whole batches (see the module's docstring)."""

    cpu_batch = 256  # on a CPU: enough images per pass to amortize its overhead, few enough to stay in cache

    def __init__(
        self,
        delta: float,
        epsilon: float,
        step_adapt: float,
        max_iter: int,
        num_trial: int,
        sample_size: int,
        init_size: int,
        min_epsilon: float,
        batch_size: int,
        eval_batch: int | None,
    ) -> None:
        super().__init__(eval_batch)
        self.delta, self.epsilon, self.step_adapt, self.max_iter = delta, epsilon, step_adapt, max_iter
        self.num_trial, self.sample_size, self.init_size, self.min_epsilon = (
            num_trial,
            sample_size,
            init_size,
            min_epsilon,
        )
        self.batch_size = batch_size

    def search(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return _Walk(self, model, x, labels, seeds).run()


class _Walk:
    def __init__(
        self, attack: NativeBoundary, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor
    ):
        self.attack, self.model, self.x, self.labels, self.seeds = attack, model, x, labels, seeds
        self.numel = x[0].numel()

    def _adversarial(self, owner: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Whether each of `images` (belonging to images `owner`) is misclassified."""
        wrong = []
        for start in range(0, len(images), self.attack.eval_batch):
            part = images[start : start + self.attack.eval_batch]
            wrong.append(self.model(part).argmax(1) != self.labels[owner[start : start + self.attack.eval_batch]])
            self.attack.evaluations += len(part)
        return torch.cat(wrong) if wrong else torch.zeros(0, dtype=torch.bool, device=self.x.device)

    def _normals(self, which: torch.Tensor, count: int, draw: int) -> torch.Tensor:
        """`[len(which), count * numel]` standard normals: Box-Muller on one random 32-bit word per
        pair of numbers (its cosine and sine halves), split into two 16-bit uniforms (plenty for
        a random direction in many dimensions; the hash is most of the cost, so one per pair)."""
        size = count * self.numel
        word = words(self.seeds[which], (size + 1) // 2, 0, _NORMAL, draw)
        radius = ((word >> 16).to(self.x.dtype) + 0.5).div_(65536).log_().mul_(-2).sqrt_()
        angle = (word & 0xFFFF).to(self.x.dtype).mul_(2 * math.pi / 65536)
        return torch.cat([radius * angle.cos(), radius * angle.sin()], dim=1)[:, :size]

    def _start(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's first misclassified uniform-noise image, and which images have one."""
        n, attack = len(self.x), self.attack
        current, found = self.x.clone(), torch.zeros(n, dtype=torch.bool, device=self.x.device)
        for start in range(0, attack.init_size, attack.batch_size):
            which = (~found).nonzero()[:, 0]
            if not len(which):
                break
            count = min(attack.batch_size, attack.init_size - start)
            noise = uniforms(self.seeds[which], count * self.numel, 0, _NOISE, start).to(self.x.dtype)
            noise = noise.view(len(which), count, *self.x.shape[1:])
            wrong = self._adversarial(which.repeat_interleave(count), noise.flatten(0, 1)).view(len(which), count)
            hit = wrong.any(1)
            first = wrong.float().argmax(1)
            current[which[hit]] = noise[hit, first[hit]]
            found[which[hit]] = True
        return current, found

    def _orthogonal(self, which: torch.Tensor, current: torch.Tensor, delta: torch.Tensor, draw: int) -> torch.Tensor:
        """ART's spherical candidates around `current` `[A, S, *image]` (its `_orthogonal_perturb`:
        a random direction of length `delta * |original - current|`, made orthogonal to
        `original - current`, then the step back onto the sphere around `original`), with the
        per-image scalars folded so each big tensor is touched a few times only."""
        s = self.attack.sample_size
        towards = (self.x[which] - current).flatten(1)[:, None]  # [A, 1, D]
        distance = towards.norm(dim=2, keepdim=True)
        direction = towards / distance
        delta = delta.view(-1, 1, 1)
        hypotenuse = torch.sqrt(1 + delta**2)
        flat = self._normals(which, s, draw).view(len(which), s, -1)
        flat *= delta * distance / (flat.norm(dim=2, keepdim=True) * hypotenuse)
        # minus the component along `direction`, one fused pass
        flat = torch.baddbmm(flat, torch.bmm(flat, direction.transpose(1, 2)), direction, alpha=-1)
        base = current.flatten(1)[:, None] - (1 - hypotenuse) / hypotenuse * towards  # [A, 1, D]
        return flat.add_(base).clamp_(0, 1).view(len(which), s, *self.x.shape[1:])

    def _adapt(self, value: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        step = self.attack.step_adapt
        return torch.where(ratio < 0.2, value * step, torch.where(ratio > 0.5, value / step, value))

    def run(self) -> torch.Tensor:
        attack = self.attack
        current, walking = self._start()
        delta = torch.full((len(self.x),), attack.delta, dtype=torch.float64, device=self.x.device)
        epsilon = torch.full_like(delta, attack.epsilon)
        for iteration in range(attack.max_iter):
            which = walking.nonzero()[:, 0]
            if not len(which):
                break
            # the orthogonal step: tries until some candidates stay adversarial
            pending = torch.ones(len(which), dtype=torch.bool, device=self.x.device)
            kept = torch.empty(
                len(which), attack.sample_size, *self.x.shape[1:], dtype=self.x.dtype, device=self.x.device
            )  # read only where set
            satisfied = torch.zeros(len(which), attack.sample_size, dtype=torch.bool, device=self.x.device)
            for trial in range(attack.num_trial):
                rows = pending.nonzero()[:, 0]
                if not len(rows):
                    break
                idx = which[rows]
                candidates = self._orthogonal(
                    idx, current[idx], delta[idx].to(self.x.dtype), iteration * attack.num_trial + trial
                )
                wrong = self._adversarial(idx.repeat_interleave(attack.sample_size), candidates.flatten(0, 1))
                wrong = wrong.view(len(rows), attack.sample_size)
                delta[idx] = self._adapt(delta[idx], wrong.double().mean(1))
                success = wrong.any(1)
                kept[rows[success]] = candidates[success]
                satisfied[rows[success]] = wrong[success]
                pending[rows[success]] = False
            walking[which[pending]] = False  # every try failed: ART stops there
            # the step towards the original: only the orthogonal step's adversarial candidates
            going = (~pending).nonzero()[:, 0]
            pending = torch.zeros(len(which), dtype=torch.bool, device=self.x.device)
            pending[going] = True
            for _ in range(attack.num_trial):
                rows = pending.nonzero()[:, 0]
                if not len(rows):
                    break
                idx = which[rows]
                mask = satisfied[rows]  # [R, S]
                points = kept[rows]
                moved = (points + epsilon[idx].to(self.x.dtype).view(-1, 1, *[1] * (self.x.dim() - 1))
                         * (self.x[idx][:, None] - points)).clamp(0, 1)  # fmt: skip
                owner = idx[:, None].expand_as(mask)[mask]
                wrong = torch.zeros_like(mask)
                wrong[mask] = self._adversarial(owner, moved[mask])
                ratio = wrong.double().sum(1) / mask.double().sum(1)
                epsilon[idx] = self._adapt(epsilon[idx], ratio)
                success = wrong.any(1)
                distance = (moved - self.x[idx][:, None]).flatten(2).norm(dim=2).masked_fill(~wrong, math.inf)
                best = distance.argmin(1)
                won = rows[success]
                current[which[won]] = moved[success, best[success]]
                pending[won] = False
            lost = which[pending]  # every try failed: ART stops at the nearest orthogonal candidate
            if len(lost):
                rows = pending.nonzero()[:, 0]
                distance = (
                    (kept[rows] - self.x[lost][:, None]).flatten(2).norm(dim=2).masked_fill(~satisfied[rows], math.inf)
                )
                current[lost] = kept[rows, distance.argmin(1)]
                walking[lost] = False
            walking &= epsilon >= attack.min_epsilon
        return current
