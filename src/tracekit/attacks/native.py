"""Native torch versions of ART's FGSM / L2 gradient, PGD and DeepFool: whole batches on the device.

Each reproduces the ART algorithm step for step (same updates, clipping to [0, 1], projection,
stopping rules), but runs the batch on the images' device with `torch.autograd.grad` taken with
respect to the input only: no NumPy round trips, no parameter gradients, nothing of the model
changed (a model left in training mode is evaluated as ART does, in eval mode, and its flags are
restored). Results come back on the images' device and dtype; the model's own dtype is used inside.

Where they differ from ART, on purpose:
- the loss is the *sum* of per-image cross-entropies, not ART's batch mean, so an image's
  gradient does not depend on its batch (a uniform rescaling: the sign and the L2-normalized
  direction are the same);
- PGD draws its random start (and, with `random_eps`, its radius) from torch's generator (seed it
  with `torch.manual_seed`), ART from NumPy's and SciPy's global one; the distributions are the
  same (uniform in the L-inf box, uniform in the L2 ball; a normal truncated to [0, eps]), the draws
  are not. A restart's result is judged a success against `labels` (ART compares with the clean
  prediction; the same for the correctly classified images the engine attacks);
- FGSM / L2 gradient with `num_random_init` is PGD's single step of `eps` from a random start (as
  in ART), but restarts keep each *image's* successful result; ART keeps the whole batch of the
  restart with the best success rate, so its choice for an image depends on its batch;
- DeepFool considers each image's own `nb_grads` top classes; ART takes the union of every image's
  top classes over the whole call, so its result depends on what else is in the batch. And when
  that union is not all the classes, ART 1.20 measures the logit differences from the wrong logit
  (`f_batch[i, labels_indices]`: the prediction's position in the union read as a class id); here,
  as in the paper, they are measured from the predicted class's logit. With `nb_grads` >= the
  number of classes the two agree.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TracekitError

# ART's DeepFool guard against division by zero (`tol = 10e-8`).
_DEEPFOOL_TOL = 1e-7


def norm_order(norm: float | str) -> float:
    try:
        order = math.inf if norm == "inf" else float(norm)
    except (TypeError, ValueError):
        order = math.nan
    if order not in (math.inf, 2.0):
        raise TracekitError(f"native attacks support norm 'inf' or 2, got {norm!r}; use backend: art for other norms")
    return order


def minimal_step_count(eps: float, eps_step: float) -> int:
    """How many equal steps of at most `eps_step` reach `eps` exactly (the sizes a minimal FGM tries)."""
    return math.ceil(eps / eps_step - 1e-9)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block (as ART computes), touching nothing when the model is already in eval mode."""
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        with torch.enable_grad():  # callers may be inside torch.no_grad()
            yield
    finally:
        for m in training:
            m.training = True


def to_model_device(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """`images`, detached, on the device and in the floating dtype of the model (its own when it has none)."""
    tensor = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), images)
    return images.detach().to(tensor.device, tensor.dtype)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _loss_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of each image's cross-entropy with respect to that image."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def unit_step(grad: torch.Tensor, norm: float) -> torch.Tensor:
    """`grad` turned in place into the unit step that most increases the loss to first order (0 for a 0 gradient)."""
    if norm == math.inf:
        return grad.sign_()
    length = grad.flatten(1).norm(dim=1).view(-1, *[1] * (grad.dim() - 1))
    return grad.div_(length.where(length > 0, 1.0))


def project(delta: torch.Tensor, eps: float, norm: float) -> torch.Tensor:
    """`delta` moved into the `norm` ball of radius `eps` (L2: rescaled, as ART does)."""
    if norm == math.inf:
        return delta.clamp(-eps, eps)
    length = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.dim() - 1))
    return delta * (eps / length.where(length > 0, 1.0)).clamp(max=1.0)


def random_in_ball(like: torch.Tensor, eps: float, norm: float) -> torch.Tensor:
    """One point per image drawn uniformly from the `norm` ball of radius `eps` (torch's generator)."""
    if norm == math.inf:
        return (torch.rand_like(like) * 2 - 1) * eps
    direction = torch.randn_like(like).flatten(1)
    dims = direction.shape[1]
    radius = eps * torch.rand(len(like), 1, device=like.device, dtype=like.dtype) ** (1 / dims)
    return (direction / direction.norm(dim=1, keepdim=True) * radius).view_as(like)


class NativeFastGradient:
    """ART's `FastGradientMethod` (untargeted, no random init) on whole batches: one step of size `eps`.

    With `minimal`, each image gets the smallest of `k * eps / K` (`K = ceil(eps / eps_step)`,
    k = 1..K) that changes its prediction away from its label, else `eps`, along the one gradient taken
    at the clean image (ART's `minimal=True`, with `eps` always the last size tried).
    """

    def __init__(
        self, norm: float | str, eps: float, minimal: bool = False, eps_step: float = 0.01, num_random_init: int = 0
    ) -> None:
        self.norm, self.eps, self.minimal, self.eps_step = norm_order(norm), eps, minimal, eps_step
        self.num_random_init = num_random_init
        if minimal and num_random_init:
            raise TracekitError("a minimal fast gradient attack takes no random start (ART ignores num_random_init)")

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` in [0, 1] (same shape, device and dtype)."""
        if self.num_random_init:  # a random start, one projected step of eps: one-step PGD
            return NativePGD(self.norm, self.eps, self.eps, 1, self.num_random_init).generate(model, images, labels)
        x = to_model_device(model, images)
        labels = labels.to(x.device)
        with evaluating(model):
            unit = unit_step(_loss_gradient(model, x, labels), self.norm)
            if not self.minimal:
                return x.add(unit, alpha=self.eps).clamp_(0, 1).to(images)
            adversarial = x.clone()
            active = torch.arange(len(x), device=x.device)
            steps = minimal_step_count(self.eps, self.eps_step)
            for k in range(1, steps + 1):
                size = self.eps if k == steps else k * self.eps / steps
                candidate = (x[active] + size * unit[active]).clamp(0, 1)
                adversarial[active] = candidate
                active = active[_predict(model, candidate) == labels[active]]
                if len(active) == 0:
                    break
        return adversarial.to(images)


class NativePGD:
    """ART's `ProjectedGradientDescentPyTorch` (untargeted) on whole batches.

    `max_iter` steps of `eps_step` along the loss gradient's sign (L-inf) or direction (L2), each
    clipped to [0, 1] and projected back into the `eps` ball around the clean image; no early stop.
    With `num_random_init` > 0 every run starts from a uniform random point of the ball (clipped), and
    a later run's result replaces the kept one for the images it makes misclassified (ART's rule).
    With `decay`, steps follow the momentum `m = decay * m + g / |g|_1` (Dong et al.'s MI-FGSM, as
    ART computes it) instead of the gradient `g`. With `random_eps`, each call draws its radius from
    a normal of scale `eps / 2` truncated to [0, eps] and scales `eps_step` alike (ART's rule).
    """

    def __init__(
        self,
        norm: float | str,
        eps: float,
        eps_step: float,
        max_iter: int,
        num_random_init: int = 0,
        decay: float | None = None,
        random_eps: bool = False,
    ) -> None:
        self.norm, self.eps, self.eps_step = norm_order(norm), eps, eps_step
        self.max_iter, self.num_random_init = max_iter, num_random_init
        self.decay, self.random_eps = decay, random_eps

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` in [0, 1] (same shape, device and dtype)."""
        x = to_model_device(model, images)
        labels = labels.to(x.device)
        eps, eps_step = self._radius()
        with evaluating(model):
            kept = self._run(model, x, labels, eps, eps_step)
            for _ in range(1, self.num_random_init):
                adversarial = self._run(model, x, labels, eps, eps_step)
                success = _predict(model, adversarial) != labels
                kept[success] = adversarial[success]
        return kept.to(images)

    def _radius(self) -> tuple[float, float]:
        """`(eps, eps_step)`; with `random_eps` a radius drawn for this call and the step scaled alike."""
        if not self.random_eps:
            return self.eps, self.eps_step
        drawn = nn.init.trunc_normal_(torch.empty(1), mean=0.0, std=self.eps / 2, a=0.0, b=self.eps).item()
        return drawn, self.eps_step * drawn / self.eps

    def _run(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float, eps_step: float
    ) -> torch.Tensor:
        adversarial = x
        momentum = None if self.decay is None else torch.zeros_like(x)
        for i in range(self.max_iter):
            if i == 0 and self.num_random_init > 0:
                adversarial = (x + random_in_ball(x, eps, self.norm)).clamp(0, 1)
            grad = _loss_gradient(model, adversarial, labels)
            if momentum is not None:
                momentum.mul_(self.decay).add_(_l1_normalized(grad))
                grad = momentum.clone()
            step = eps_step * unit_step(grad, self.norm)
            adversarial = x + project((adversarial + step).clamp(0, 1) - x, eps, self.norm)
        return adversarial.clone() if adversarial is x else adversarial


def _l1_normalized(grad: torch.Tensor) -> torch.Tensor:
    """Each image's gradient divided by its L1 norm (0 stays 0), the momentum's increment."""
    length = grad.flatten(1).norm(p=1, dim=1).view(-1, *[1] * (grad.dim() - 1))
    return grad / length.where(length > 0, 1.0)


class NativeDeepFool:
    """ART's `DeepFool` on whole batches, finished images dropped from each iteration.

    Each step moves an image to the linearized boundary of the closest of its top `nb_grads` classes
    (by the original logits), clipped to [0, 1], until its prediction leaves the original one or after
    `max_iter` steps; the total perturbation is then scaled by `1 + overshoot` and clipped (ART's
    `epsilon`). Like ART it attacks the model's prediction and does not use `labels`.
    """

    def __init__(self, max_iter: int = 100, overshoot: float = 0.02, nb_grads: int = 10) -> None:
        self.max_iter, self.overshoot, self.nb_grads = max_iter, overshoot, nb_grads

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of `images` in [0, 1] (same shape, device and dtype)."""
        x = to_model_device(model, images)
        adversarial = x.clone()
        active = torch.arange(len(x), device=x.device)
        with evaluating(model):
            with torch.no_grad():
                original, others = self._classes(model(x))
            for _ in range(self.max_iter):
                current = adversarial[active].requires_grad_(True)
                logits = model(current)
                keep = (logits.argmax(1) == original[active]).nonzero().squeeze(1)
                active = active[keep]
                if len(active) == 0:
                    break
                r = self._step(logits, current, keep, original[active], others[active])
                adversarial[active] = (adversarial[active] + r).clamp(0, 1)
        return (x + (1 + self.overshoot) * (adversarial - x)).clamp(0, 1).to(images)

    def _classes(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's predicted class and its other top `nb_grads - 1` classes (ascending, as ART orders them)."""
        original = logits.argmax(1)
        rest = logits.scatter(1, original[:, None], -math.inf)
        others = rest.topk(min(self.nb_grads, logits.shape[1]) - 1, dim=1).indices
        return original, others.sort(dim=1).values

    @staticmethod
    def _step(
        logits: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, original: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """The DeepFool step of the images `rows` of the batch `x` (whose `logits` are given)."""
        n = len(rows)
        if others.shape[1] == 0:  # nb_grads == 1: no other class to move towards
            return torch.zeros_like(x[rows])
        chosen = logits.detach()[rows]
        f_diff = chosen.gather(1, others) - chosen.gather(1, original[:, None])
        grads = []
        for j in range(others.shape[1]):
            weights = torch.zeros_like(logits)
            weights[rows, others[:, j]] = 1.0
            weights[rows, original] = -1.0
            (grad,) = torch.autograd.grad(logits, x, weights, retain_graph=j < others.shape[1] - 1)
            grads.append(grad[rows])
        grad_diff = torch.stack(grads, 1)  # [n, classes, C, H, W]
        lengths = grad_diff.flatten(2).norm(dim=2)
        closest = (f_diff.abs() / (lengths + _DEEPFOOL_TOL)).argmin(1)
        index = torch.arange(n, device=x.device)
        size = f_diff[index, closest].abs() / (lengths[index, closest] ** 2 + _DEEPFOOL_TOL)
        return size.view(-1, *[1] * (x.dim() - 1)) * grad_diff[index, closest]


class BatchedSearch:
    """Base of the native search attacks (one-pixel, boundary): `generate_seeded` runs `search`
    on the batch on the model's device and in its dtype; `generate` (a direct call) gives every
    image seed 0. `eval_batch` None: 4096 candidate images per forward pass on a GPU,
    `cpu_batch` on a CPU (where small batches stay in cache)."""

    cpu_batch = 128

    def __init__(self, eval_batch: int | None) -> None:
        self.batch = eval_batch
        self.eval_batch = eval_batch or self.cpu_batch
        self.evaluations = 0  # candidate images forwarded, over the attack's life (for benchmarks)

    def generate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.generate_seeded(model, images, labels, torch.zeros(len(images), dtype=torch.long))

    @torch.no_grad()
    def generate_seeded(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor
    ) -> torch.Tensor:
        with evaluating(model), torch.no_grad():
            x = to_model_device(model, images)
            self.eval_batch = self.batch or (4096 if x.is_cuda else self.cpu_batch)
            adversarial = self.search(model, x, labels.to(x.device), seeds.to(x.device))
            return adversarial.to(images.device, images.dtype)

    def search(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
