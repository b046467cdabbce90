"""The delta rule against an independent float64 reference written as explicit sums over pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fpa_export.models import canvas_from_writes, delta_rule, delta_rule_writes, partial_sums, rank_one_updates


def reference_canvas(keys: np.ndarray, values: np.ndarray, lrs: np.ndarray) -> np.ndarray:
    """docs/MODEL.md §1 literally: an explicit S×S matrix, retrieval and update pixel by pixel."""
    num_steps, size = keys.shape
    canvas = np.zeros((size, size))
    for t in range(num_steps):
        write = np.zeros(size)
        for i in range(size):
            if t == 0:  # step 1: W_1 = v_1 k_1ᵀ, no learning rate
                write[i] = values[0, i]
            else:
                retrieved = sum(canvas[i, j] * keys[t, j] for j in range(size))
                beta = lrs[t, i] if lrs.shape[1] > 1 else lrs[t, 0]
                write[i] = beta * (values[t, i] - retrieved)
        for i in range(size):
            for j in range(size):
                canvas[i, j] += write[i] * keys[t, j]
    return canvas


def random_instructions(n: int, steps: int, size: int, lr_width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.softmax(torch.randn(n, steps, size, generator=g, dtype=torch.float64) * 2, dim=-1)
    values = torch.randn(n, steps, size, generator=g, dtype=torch.float64)
    lrs = torch.sigmoid(torch.randn(n, steps, lr_width, generator=g, dtype=torch.float64))
    return keys, values, lrs


@pytest.mark.parametrize("lr_width", [1, 5], ids=["lr-per-step", "lr-per-row"])
@pytest.mark.parametrize("steps", [1, 2, 6])
def test_delta_rule_matches_pixel_reference(steps, lr_width):
    keys, values, lrs = random_instructions(n=3, steps=steps, size=5, lr_width=lr_width)
    ours = delta_rule(keys, values, lrs)
    for n in range(3):
        expected = reference_canvas(keys[n].numpy(), values[n].numpy(), lrs[n].numpy())
        np.testing.assert_allclose(ours[n].numpy(), expected, rtol=0, atol=1e-12)


def test_step_one_ignores_learning_rate():
    keys, values, lrs = random_instructions(n=2, steps=1, size=4, lr_width=1)
    canvas = delta_rule(keys, values, lrs * 0.0)
    expected = values[:, 0, :, None] * keys[:, 0, None, :]  # v_1 k_1ᵀ: rows = values, columns = keys
    torch.testing.assert_close(canvas, expected, rtol=0, atol=0)


def test_rows_are_values_and_columns_are_keys():
    keys = torch.zeros(1, 1, 3, dtype=torch.float64)
    keys[0, 0, 2] = 1.0
    values = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    canvas = delta_rule(keys, values, torch.ones(1, 1, 1, dtype=torch.float64))
    assert canvas[0, :, 2].tolist() == [1.0, 2.0, 3.0]  # column 2 (the key) holds the value
    assert canvas[0, :, :2].abs().sum() == 0


def test_repeated_key_with_unit_lr_overwrites_the_memory():
    """The delta rule's defining property: writing v under key k with beta = 1 makes W k = v."""
    keys, values, lrs = random_instructions(n=1, steps=3, size=4, lr_width=1)
    keys = torch.nn.functional.one_hot(torch.tensor([[1, 1, 1]]), 4).double()  # the same key 3 times
    canvas = delta_rule(keys, values, torch.ones_like(lrs))
    torch.testing.assert_close(canvas[0] @ keys[0, 0], values[0, -1])


def test_updates_and_partial_sums_add_up_to_the_canvas():
    keys, values, lrs = random_instructions(n=2, steps=5, size=4, lr_width=4)
    writes = delta_rule_writes(keys, values, lrs)
    updates = rank_one_updates(writes, keys)
    partials = partial_sums(updates)
    canvas = canvas_from_writes(writes, keys)
    assert updates.shape == (2, 5, 4, 4)
    torch.testing.assert_close(partials[:, -1], canvas)
    for t in range(5):  # each partial sum is the reference canvas of the first t+1 steps
        expected = reference_canvas(keys[0, :t + 1].numpy(), values[0, :t + 1].numpy(), lrs[0, :t + 1].numpy())
        np.testing.assert_allclose(partials[0, t].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("lr_width", [1, 5])
def test_sampling_in_place_and_the_autograd_form_give_the_same_bits(lr_width):
    """Under inference mode (sampling) the writes fill one buffer in place (delta_rule_writes); elsewhere
    (training, no_grad, vmap) they are concatenated. Both are the same products on the same numbers."""
    keys, values, lrs = (t.float() for t in random_instructions(7, 9, 5, lr_width, seed=3))
    with torch.inference_mode():
        in_place = delta_rule_writes(keys, values, lrs)
    trained = keys.clone().requires_grad_()
    functional = delta_rule_writes(trained, values, lrs)
    assert functional.grad_fn is not None and in_place.grad_fn is None
    assert torch.equal(in_place, functional.detach())
    functional.sum().backward()  # the autograd form still trains
    assert trained.grad is not None and torch.isfinite(trained.grad).all()
    with torch.no_grad():  # a user's no_grad code: the functional form, the same bits
        assert torch.equal(delta_rule_writes(keys, values, lrs), in_place)
    with torch.inference_mode():  # a transform inside inference mode keeps the functional form too
        mapped = torch.func.vmap(delta_rule_writes)(keys[:, None], values[:, None], lrs[:, None])
    assert torch.allclose(mapped[:, 0], in_place, atol=1e-6)
