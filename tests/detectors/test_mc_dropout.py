"""Per-image Monte Carlo dropout masks (used by KD+BU)."""

import torch
from torch import nn

from tracekit.detectors.mc_dropout import PerImageDropout, image_keys, uniforms


def test_dropout_masks_belong_to_the_image() -> None:
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    u = uniforms(image_keys(images), 4096, seed=0, site=0, draw=0)
    assert abs(float((u < 0.3).double().mean()) - 0.3) < 0.01  # rate p: about p of the elements dropped
    again = uniforms(image_keys(images[[5, 9]]), 4096, seed=0, site=0, draw=0)
    assert torch.equal(again, u[[5, 9]])  # the same masks in another batch
    assert not torch.equal(u[0], u[1])  # other images, other masks
    for other in ({"seed": 1}, {"site": 1}, {"draw": 1}):
        assert not torch.equal(uniforms(image_keys(images), 4096, **{"seed": 0, "site": 0, "draw": 0, **other}), u)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Dropout2d(0.5), nn.Flatten()).eval()
    dropout = PerImageDropout(model, "", 0.0, images, seed=0, where="test")
    with torch.no_grad(), dropout.hooked():
        out = model(images).view(64, 6, -1)
    plain = model(images).detach().view(64, 6, -1)
    channel_kept = out.abs().sum(2) > 0
    assert torch.allclose(out[channel_kept], 2 * plain[channel_kept])  # whole channels, scaled by 1/(1-p)
    assert 0.3 < channel_kept.double().mean() < 0.7
