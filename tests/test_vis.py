"""Deep visualisation with random VGG-19 networks does what He, Wang & Hopcroft (2016) describe.

Small photographs from scikit-image, small networks (width 16–32 instead of 64) and a few dozen L-BFGS
iterations keep each test to seconds; the checks are relative (loss ratios, PSNR and edge orderings).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpa_export.fd.features import RandomVGG19, draw_conv_weight
from fpa_export.vis import invert, psnr, stacked_network, synthesize_texture, transfer_style
from fpa_export.vis.losses import make_terms, relative_error, gram, set_automatic_weights
from fpa_export.vis.optimize import white_noise
from fpa_export.vis.texture import TEXTURE_LAYERS


def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image sample picture as (1, 3, size, size) in [0, 1] (the project's file loader)."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    from fpa_export.common.images import resize_center_crop

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = resize_center_crop(Image.fromarray(array), size)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255.0


def sobel_edges(image: torch.Tensor) -> torch.Tensor:
    grey = image.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    gx, gy = F.conv2d(grey, kx), F.conv2d(grey, kx.transpose(2, 3))
    return (gx.square() + gy.square()).sqrt().flatten()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def max_shifted_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Highest normalised correlation of the grey images over all circular shifts (via the FFT)."""
    a, b = a.mean(dim=1)[0], b.mean(dim=1)[0]
    a, b = a - a.mean(), b - b.mean()
    a, b = a / a.norm(), b / b.norm()
    cross = torch.fft.irfft2(torch.fft.rfft2(a) * torch.fft.rfft2(b).conj(), s=a.shape)
    return float(cross.max())


def test_inversion_loss_falls_and_shallow_layers_reconstruct_better():
    target = photo("chelsea", 32)
    network = RandomVGG19(seed=0, base_width=32)
    shallow = invert(target, "conv1_2", network, steps=40, progress=False)
    deep = invert(target, "conv4_1", network, steps=40, progress=False)
    for result in (shallow, deep):
        assert result.final_loss <= result.initial_loss / 100, result.losses[::10]
    # the reported loss is that of the returned image, recomputed independently
    features = network(target, ["conv4_1"])["conv4_1"]
    assert relative_error(network(deep.image, ["conv4_1"])["conv4_1"], features) == pytest.approx(
        deep.final_loss, rel=1e-4)
    assert psnr(shallow.image, target) > psnr(deep.image, target) + 5
    assert psnr(shallow.image, target) > 30


def test_texture_gram_loss_falls_and_result_is_no_shifted_copy():
    source = photo("brick", 32)
    network = RandomVGG19(seed=1, base_width=32)
    result, weights = synthesize_texture(source, network, steps=60, progress=False)
    assert result.final_loss <= result.initial_loss / 100, result.losses[::10]
    assert set(weights) == {f"gram:{name}" for name in TEXTURE_LAYERS}
    # the check can fail: a shifted copy of the source scores ≈ 1
    assert max_shifted_correlation(torch.roll(source, (5, 9), dims=(2, 3)), source) > 0.99
    assert max_shifted_correlation(result.image, source) < 0.7
    # and the texture is not noise either: its Grams match the source's at every layer
    act, target = network(result.image, TEXTURE_LAYERS), network(source, TEXTURE_LAYERS)
    for name in TEXTURE_LAYERS:
        assert relative_error(gram(act[name]), gram(target[name])) < 0.01, name


def test_automatic_weights_equalise_initial_gradient_norms():
    network = RandomVGG19(seed=2, base_width=16)
    start = white_noise(32, seed=3)
    terms = make_terms(network, photo("coffee", 32), ("conv1_1", "pool2", "pool4"), "gram")
    terms += make_terms(network, photo("astronaut", 32), ["conv3_2"], "feature")

    def norms(weighted: bool) -> list[float]:   # one fresh forward pass per term
        out = []
        for term in terms:
            x = start.clone().requires_grad_(True)
            activation = network(x, [term.layer])[term.layer]
            value = relative_error(activation if term.kind == "feature" else gram(activation), term.target)
            (grad,) = torch.autograd.grad(value * (term.weight if weighted else 1.0), x)
            out.append(float(grad.norm()))
        return out

    raw = norms(weighted=False)
    assert max(raw) / min(raw) > 3  # the terms really do pull with different strengths
    set_automatic_weights(network, terms, start)
    weighted = norms(weighted=True)
    assert max(weighted) / min(weighted) == pytest.approx(1.0, abs=1e-4)


def test_style_transfer_lowers_both_losses_and_keeps_content_edges():
    content, style = photo("astronaut", 48), photo("coffee", 48)
    network = RandomVGG19(seed=0, base_width=16)
    result, _ = transfer_style(content, style, network, steps=60, progress=False)
    for key, values in result.values.items():
        assert values[-1] < values[0] / 2, (key, values)
    edges = sobel_edges(result.image)
    kept_content = correlation(edges, sobel_edges(content))
    kept_style = correlation(edges, sobel_edges(style))
    assert kept_content > kept_style + 0.05, (kept_content, kept_style)


def test_stacked_ranvgg_keeps_the_best_draw_per_layer():
    reference = photo("chelsea", 32)
    network, choices = stacked_network(reference, "conv1_2", draws=3, seed=5, base_width=8,
                                       steps_per_draw=5, progress=False)
    assert [c.layer for c in choices] == ["conv1_1", "conv1_2"]
    for choice in choices:
        assert len(choice.errors) == 3 and choice.errors[choice.chosen] == min(choice.errors)
        conv = network.convs[choice.layer]
        expected = draw_conv_weight(5, choice.layer, conv.in_channels, conv.out_channels, choice.chosen)
        assert torch.equal(conv.weight, expected)
    plain = RandomVGG19(seed=5, base_width=8)
    assert torch.equal(network.convs["conv2_1"].weight, plain.convs["conv2_1"].weight)
    assert network.weights_sha256 != plain.weights_sha256 or all(c.chosen == 0 for c in choices)


def test_progress_bars_stay_off_piped_logs():
    """Run as `fpa-vis … 2> log`, the L-BFGS bar writes no carriage-return frames (tqdm only on a TTY)."""
    import subprocess
    import sys

    code = ("import torch\n"
            "from fpa_export.vis.optimize import lbfgs, white_noise\n"
            "target = torch.full((1, 3, 8, 8), 0.25)\n"
            "result = lbfgs(white_noise(8), lambda x: (((x - target) ** 2).sum(), {}), steps=5)\n"
            "print(round(result.final_loss, 6))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) < 1e-3                  # it did optimise
    assert "\r" not in result.stderr and "it/s" not in result.stderr
