"""The built-in detectors' factories, each registered under its name where it is defined
(`@detectors.register`): its parameters (its signature, checked when a spec loads) and summary. This
module stays light: a factory imports its detector (torch) in its body, so that `tracekit validate`
and `tracekit plugins` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ..errors import TracekitError
from ..hookspecs import Components
from ..registry import component_spec

if TYPE_CHECKING:
    from .dnr import DeepNeuralRejection
    from .feature_response import FeatureResponse
    from .feature_squeezing import FeatureSqueezing
    from .kd_bu import KernelDensityUncertainty
    from .knn import DeepKNN
    from .lid import LocalIntrinsicDimensionality
    from .logit_scores import Energy, MaxSoftmax, Odin
    from .magnet import MagNet
    from .mahalanobis import Mahalanobis
    from .multilid import MultiLID
    from .nic import NeuralInvariants
    from .nss import NaturalSceneStatistics
    from .vim import VirtualLogit

detectors = Components("detector")

SaliencySpec = component_spec("saliency", "guided-backprop")
ScoreSpec = component_spec("score", "local-entropy")


@detectors.register("feature-response")
def feature_response(
    saliency: SaliencySpec = {"name": "guided-backprop"},  # noqa: B006 (validated copy)
    score: ScoreSpec = {"name": "local-entropy"},  # noqa: B006
) -> FeatureResponse:
    """The paper's detector: saliency map -> score -> calibrated threshold."""
    from ..plugins import registry
    from ..protocols import DifferentiableMapScore, DifferentiableMaps
    from .feature_response import DifferentiableFeatureResponse, FeatureResponse

    def build(kind: str, cfg: dict[str, Any]) -> Any:
        params = {k: v for k, v in cfg.items() if k not in ("name", "label")}
        return registry(kind).create(cfg["name"], **params)

    parts = build("saliency", saliency), build("score", score)
    attackable = isinstance(parts[0], DifferentiableMaps) and isinstance(parts[1], DifferentiableMapScore)
    return (DifferentiableFeatureResponse if attackable else FeatureResponse)(*parts, (saliency["name"], score["name"]))


@detectors.register("feature-squeezing")
def feature_squeezing(
    bits: Annotated[int, Field(ge=1, le=8)] | None = None,
    median_sizes: Annotated[list[Annotated[int, Field(ge=2, le=5)]], Field(max_length=4)] = [2],  # noqa: B006
) -> FeatureSqueezing:
    """Feature squeezing (Xu et al. 2018): bit depth and median smoothing, max L1 softmax change."""
    from .feature_squeezing import FeatureSqueezing

    return FeatureSqueezing(bits, list(median_sizes))


@detectors.register("lid")
def lid(
    layers: Annotated[list[str], Field(min_length=1)] | None = None,
    k: Annotated[int, Field(ge=2)] = 20,
    batch_size: Annotated[int, Field(ge=3)] = 100,
    seed: int = 0,
) -> LocalIntrinsicDimensionality:
    """Local intrinsic dimensionality of activations (Ma et al. 2018) with a logistic regression."""
    from .lid import WHERE, LocalIntrinsicDimensionality

    if k >= batch_size:
        raise TracekitError(f"{WHERE}: k={k} must be smaller than batch_size={batch_size} (the reference batch)")
    return LocalIntrinsicDimensionality(None if layers is None else list(layers), k, batch_size, seed)


@detectors.register("mahalanobis")
def mahalanobis(
    layers: Annotated[list[str], Field(min_length=1)] | None = None,
    noise: Annotated[float, Field(ge=0, le=1)] = 0.0014,
    batch_size: Annotated[int, Field(gt=0)] = 128,
) -> Mahalanobis:
    """Mahalanobis confidence on layer features (Lee et al. 2018): tied Gaussians, pre-processing, ensemble."""
    from .mahalanobis import Mahalanobis

    return Mahalanobis(None if layers is None else list(layers), noise, batch_size)


@detectors.register("kd-bu")
def kd_bu(
    layer: str | None = None,
    bandwidth: Annotated[float, Field(gt=0)] = 1.0,
    n_samples: Annotated[int, Field(ge=2)] = 50,
    rate: Annotated[float, Field(gt=0, lt=1)] = 0.5,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    seed: int = 0,
) -> KernelDensityUncertainty:
    """Kernel density on last hidden features plus MC-dropout uncertainty (Feinman et al. 2017)."""
    from .kd_bu import KernelDensityUncertainty

    return KernelDensityUncertainty(layer, bandwidth, n_samples, rate, batch_size, seed)


@detectors.register("msp")
def msp() -> MaxSoftmax:
    """Maximum softmax probability (Hendrycks and Gimpel 2017), negated: the post-hoc baseline."""
    from .logit_scores import MaxSoftmax

    return MaxSoftmax()


@detectors.register("energy")
def energy(temperature: Annotated[float, Field(gt=0)] = 1.0) -> Energy:
    """Free energy of the logits, -T logsumexp(f / T) (Liu et al. 2020)."""
    from .logit_scores import Energy

    return Energy(temperature)


@detectors.register("odin")
def odin(
    temperature: Annotated[float, Field(gt=0)] = 1000.0,
    noise: Annotated[float, Field(ge=0, le=1)] = 0.0014,
) -> Odin:
    """ODIN (Liang et al. 2018): temperature-scaled softmax of the input after a small step, negated."""
    from .logit_scores import Odin

    return Odin(temperature, noise)


@detectors.register("knn")
def knn(k: Annotated[int, Field(ge=1)] = 50, batch_size: Annotated[int, Field(gt=0)] = 128) -> DeepKNN:
    """Deep k-nearest neighbours (Sun et al. 2022): distance to the k-th nearest normalized clean feature."""
    from .knn import DeepKNN

    return DeepKNN(k, batch_size)


@detectors.register("vim")
def vim(dim: Annotated[int, Field(ge=1)] | None = None, batch_size: Annotated[int, Field(gt=0)] = 128) -> VirtualLogit:
    """ViM (Wang et al. 2022): virtual logit from the residual of the principal subspace, against the energy."""
    from .vim import VirtualLogit

    return VirtualLogit(dim, batch_size)


@detectors.register("multilid")
def multilid(
    layers: Annotated[list[str], Field(min_length=1, max_length=16)] | None = None,
    k: Annotated[int, Field(ge=2, le=1000)] = 20,
    batch_size: Annotated[int, Field(ge=3)] = 100,
    trees: Annotated[int, Field(ge=1, le=2000)] = 100,
    seed: int = 0,
) -> MultiLID:
    """multiLID (Lorenz et al. 2023): per-layer LID growth-rate terms against a fixed clean reference, random forest."""
    from .multilid import MultiLID

    if k >= batch_size:
        raise TracekitError(f"detector 'multilid': k={k} must be smaller than batch_size={batch_size} (the reference)")
    return MultiLID(None if layers is None else list(layers), k, batch_size, trees, seed)


@detectors.register("nss")
def nss(batch_size: Annotated[int, Field(gt=0)] = 128) -> NaturalSceneStatistics:
    """Natural scene statistics (Kherchouche et al. 2020): BRISQUE features and an RBF SVM."""
    from .nss import NaturalSceneStatistics

    return NaturalSceneStatistics(batch_size)


@detectors.register("dnr")
def dnr(
    layers: Annotated[list[str], Field(min_length=1, max_length=8)] | None = None,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    seed: int = 0,
) -> DeepNeuralRejection:
    """Deep neural rejection (Sotgiu et al. 2020): layer-wise RBF SVMs, a combiner, reject on a low top score."""
    from .dnr import DeepNeuralRejection

    return DeepNeuralRejection(None if layers is None else list(layers), batch_size, seed)


@detectors.register("magnet")
def magnet(
    temperatures: Annotated[list[Annotated[float, Field(gt=0)]], Field(max_length=4)] = [10.0, 40.0],  # noqa: B006
    epochs: Annotated[int, Field(ge=1, le=1000)] = 200,
    noise: Annotated[float, Field(ge=0, le=1)] = 0.1,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    seed: int = 0,
) -> MagNet:
    """MagNet's detectors (Meng and Chen 2017): auto-encoder reconstruction error and JSD at two temperatures."""
    from .magnet import MagNet

    return MagNet(list(temperatures), epochs, noise, batch_size, seed)


@detectors.register("nic")
def nic(
    layers: Annotated[list[str], Field(min_length=2, max_length=8)] | None = None,
    nu: Annotated[float, Field(gt=0, le=1)] = 0.1,
    batch_size: Annotated[int, Field(gt=0)] = 128,
    seed: int = 0,
) -> NeuralInvariants:
    """NIC (Ma et al. 2019): value and provenance invariants per layer, one-class SVMs, a last one over them."""
    from .nic import NeuralInvariants

    return NeuralInvariants(None if layers is None else list(layers), nu, batch_size, seed)
