"""Training building blocks against independent references: D layout, losses, GP, EMA schedule, augment."""
from __future__ import annotations

import math

import pytest
import torch

from fpa_export.training.augment import AUG_TYPES, cutout, diff_augment, translation
from fpa_export.training.discriminator import Discriminator, stage_channels
from fpa_export.training.ema import EMASchedule, apply_schedule
from fpa_export.training.losses import d_hinge_loss, g_hinge_loss, gradient_penalty

SMALL_D = dict(fmap_max=16, attn_res_layers=(), attn_heads=1, attn_dim_head=4, batch_size=4)


@pytest.mark.parametrize("size, expected", [
    (32, [1, 256, 512]), (64, [3, 128, 256, 512]), (128, [3, 64, 128, 256, 512])])
def test_stage_channels_follow_lightweight_gan(size, expected):
    assert stage_channels(size, expected[0], 512) == expected


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_discriminator_ends_at_8x8_and_outputs_one_logit_per_head(size):
    torch.manual_seed(0)
    d = Discriminator(size, 3, fmap_max=16, attn_heads=1, attn_dim_head=4)
    seen = []
    for stage in d.stages:
        stage.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    x = torch.rand(2, 3, size, size)
    logits, logits_32, aux = d(x, aux_count=1)
    assert seen[-1][1:] == (8, 8) and len(seen) == int(math.log2(size)) - 3
    assert logits.shape == (2, 1) and logits_32.shape == (2, 1)
    assert aux.ndim == 0 and torch.isfinite(aux)
    assert d(x)[2] is None


def test_paper_discriminator_layout_at_64px():
    d = Discriminator(64, 3)  # official: fmap_max 512, attention before the 32-px stage
    assert [type(a).__name__ for a in d.attentions] == ["Identity", "ResidualAttention", "Identity"]
    assert [s.conv[0].out_channels for s in d.stages] == [128, 256, 512]
    assert d.attentions[1].attn.to_out.in_channels == 2 * 8 * 64
    conv = d.stages[0].conv[0]
    fan_in = conv.in_channels * 16
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_in)) < 0.15 * math.sqrt(2 / fan_in)


def test_local_attention_matches_unfold_reference():
    from fpa_export.training.discriminator import LinearAttention
    import torch.nn.functional as F

    torch.manual_seed(1)
    attn = LinearAttention(6, dim_head=4, heads=2)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    attn = attn.double()
    # reference: explicit unfold over 3×3 neighbourhoods with zero padding, softmax over the 9 slots
    b, h, d = 2, 2, 4
    q = attn.to_q(x).reshape(b * h, d, 35).transpose(1, 2) * attn.scale  # (B·h, N, d)
    k, v = attn.to_kv(x).chunk(2, dim=1)
    k, v = (F.unfold(t.reshape(b * h, d, 5, 7), 3, padding=1).reshape(b * h, d, 9, 35) for t in (k, v))
    sim = torch.einsum("bnd,bdjn->bnj", q, k)
    out = torch.einsum("bnj,bdjn->bdn", sim.softmax(-1), v).reshape(b, h * d, 5, 7)
    assert torch.allclose(attn._local(x), out, atol=1e-12)


def test_hinge_losses_use_the_official_sign_convention():
    real = torch.tensor([-2.0, 0.0, 0.5])
    fake = torch.tensor([2.0, 0.0, -1.0])
    expected = sum(max(0, 1 + r) + max(0, 1 - f) for r, f in zip(real.tolist(), fake.tolist())) / 3
    assert d_hinge_loss(real, fake).item() == pytest.approx(expected)
    assert d_hinge_loss(torch.full((4,), -1.5), torch.full((4,), 1.5)).item() == 0.0  # reals low
    assert g_hinge_loss(fake).item() == pytest.approx(fake.mean().item())


def test_gradient_penalty_against_analytic_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w1, w2 = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    out1, out2 = x.flatten(1) @ w1, (x.flatten(1) ** 2) @ w2  # ∂/∂x: w1 and 2·x·w2
    grads = w1 + 2 * x.detach().flatten(1) * w2
    expected = ((grads.norm(dim=1) - 1) ** 2).mean()
    gp = gradient_penalty(x, [out1, out2])
    assert gp.item() == pytest.approx(expected.item(), rel=1e-12)
    assert gradient_penalty(x, [out1, out2], scale=1024.0).item() == pytest.approx(expected.item())
    gp.backward()  # differentiable: double backward works
    assert x.grad is not None


def test_ema_schedule_paper_defaults():
    s = EMASchedule()
    resets = [step for step in range(0, 30001) if s.should_reset(step)]
    assert resets == list(range(2, 24003, 1000))
    updates = [step for step in range(19950, 20051) if s.should_update(step)]
    assert updates == [20010, 20020, 20030, 20040, 20050]
    assert not s.should_update(20000)


def test_ema_schedule_configured_and_applied():
    s = EMASchedule(beta=0.5, start=3, every=2, reset_every=5, reset_offset=1, reset_until=6)
    avg, cur = [torch.zeros(2)], [torch.ones(2)]
    actions = []
    for step in range(10):
        cur[0].fill_(float(step))
        actions.append(apply_schedule(s, step, avg, cur))
        if step == 4:
            assert torch.equal(avg[0], torch.full((2,), 0.5 * 1 + 0.5 * 4))  # reset at 1 then update at 4
    assert actions == ["", "reset", "", "", "update", "", "reset", "", "update", ""]
    assert torch.equal(avg[0], torch.full((2,), 0.5 * 6 + 0.5 * 8))


def test_diff_augment_shapes_and_semantics():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) + 0.5  # strictly positive so zeros mark the fill
    cut = cutout(x)
    zero_fraction = (cut == 0).float().mean(dim=(1, 2, 3))
    assert torch.all(zero_fraction > 0) and torch.all(zero_fraction <= 0.25 + 1e-6)
    moved = translation(x)
    assert moved.shape == x.shape
    for i in range(4):  # every translated image is a shifted copy: its non-zero values come from x[i]
        values = moved[i][moved[i] != 0]
        assert torch.isin(values, x[i]).all()
    assert diff_augment(x, 0.0) is x
    flips = [diff_augment(x, 1.0, ("flip",)) for _ in range(20)]
    assert all(torch.equal(f, x) or torch.equal(f, x.flip(3)) for f in flips)
    assert any(torch.equal(f, x.flip(3)) for f in flips) and any(torch.equal(f, x) for f in flips)
    assert AUG_TYPES == ("flip", "cutout", "translation")  # the official order
    y = x.clone().requires_grad_(True)
    diff_augment(y, 1.0).sum().backward()
    assert y.grad is not None


class _Replay(torch.nn.Module):
    """A stand-in generator that returns stored images (mapped to the tanh range) whatever z is."""

    def __init__(self, images):
        super().__init__()
        self.images, self.latent_size, self.used = images, 4, 0

    def forward(self, z):
        out = self.images[self.used:self.used + z.shape[0]]
        self.used += z.shape[0]
        return out


def test_quality_metric_ranks_a_matching_generator_above_a_blank_one(metric="pixel"):
    # (the 'rvgg' features are fpa_export.fd.frechet's and tested there; running them here costs ~20 s)
    from fpa_export.training.quality import generator_fd, image_stats

    torch.manual_seed(0)
    pattern = torch.rand(1, 1, 16, 16)
    reals = (pattern + 0.2 * torch.randn(48, 1, 16, 16)).clamp(0, 1)
    real_stats = image_stats([reals[:24]], metric)
    same = generator_fd(_Replay(reals[24:]), real_stats, metric, count=24, batch_size=8)
    blank = generator_fd(_Replay(torch.full((24, 1, 16, 16), -1.0)), real_stats, metric, count=24)
    assert 0 <= same < blank
    assert generator_fd(_Replay(reals[:24]), real_stats, metric, count=24) == pytest.approx(0, abs=1e-6)


def test_unet_stage_halves_the_discriminator_hinge_terms():
    """The official *_unet models train D with hinge_loss_bis: summed hinge / (n_real + n_fake)."""
    from tests.conftest import tiny_config, tiny_unet_config
    from fpa_export.training.trainer import Trainer, TrainConfig

    config = tiny_config(image_size=16, unet=tiny_unet_config())
    trainer = Trainer(config, TrainConfig(unet_stage=True, **SMALL_D))
    reals = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    halved = trainer._d_loss(reals.clone(), apply_gp=False)
    trainer.halve_hinge = False  # what an FPA without a U-Net computes
    torch.manual_seed(1)
    full = trainer._d_loss(reals.clone(), apply_gp=False)
    assert float(full["divergence"]) > 0
    torch.testing.assert_close(halved["divergence"], full["divergence"] / 2)
    torch.testing.assert_close(halved["aux"], full["aux"])


def test_minibatch_std_groups_never_mix_reals_and_fakes():
    from fpa_export.training.discriminator import MinibatchStd

    layer = MinibatchStd(4)
    reals, fakes = torch.rand(8, 3, 5, 5), torch.zeros(8, 3, 5, 5)  # fakes collapsed: no variation
    out = layer(torch.cat([reals, fakes]))
    assert out.shape == (16, 4, 5, 5)
    torch.testing.assert_close(out[:, :3], torch.cat([reals, fakes]))
    assert torch.all(out[:8, 3] > 0.1) and torch.all(out[8:, 3] < 1e-3)
    group = reals[:4]  # the feature is the mean over features of the std over the group's samples
    expected = group.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
    torch.testing.assert_close(out[0, 3], torch.full((5, 5), float(expected)))
    assert MinibatchStd(4)(torch.rand(6, 2, 3, 3)).shape == (6, 3, 3, 3)  # gcd(6, 4) = 2
    d = Discriminator(16, 1, fmap_max=16, attn_res_layers=(), attn_heads=1, attn_dim_head=4,
                      minibatch_std=4)
    logits, logits_32, _ = d(torch.rand(8, 1, 16, 16))
    assert logits.shape == (8, 1) and logits_32.shape == (8, 1)


def test_mode_seeking_loss_rewards_different_images_for_different_latents():
    from fpa_export.training.losses import mode_seeking_loss

    z = torch.zeros(4, 3)
    z[2:] = 2.0  # every pair is 2 apart per latent unit
    images = torch.zeros(4, 1, 2, 2)
    images[2:] = 0.5  # every pair differs by 0.5 per pixel: ratio 0.25
    assert float(mode_seeking_loss(images, z)) == pytest.approx(1 / (0.25 + 1e-5))
    collapsed = mode_seeking_loss(torch.zeros(4, 1, 2, 2), z)
    assert float(collapsed) == pytest.approx(1e5)
    assert float(mode_seeking_loss(torch.rand(5, 1, 2, 2), torch.randn(5, 3))) > 0  # odd batch: last unpaired
    with pytest.raises(ValueError, match="at least 2"):
        mode_seeking_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3))


def test_mode_seeking_weight_enters_the_generator_loss():
    import dataclasses

    from tests.conftest import tiny_config
    from fpa_export.training.losses import mode_seeking_loss
    from fpa_export.training.trainer import Trainer, TrainConfig

    trainer = Trainer(tiny_config(image_size=16), TrainConfig(**SMALL_D))
    torch.manual_seed(3)
    plain = trainer._g_loss(4)
    trainer.config = dataclasses.replace(trainer.config, mode_seeking=0.5)
    torch.manual_seed(3)
    weighted = trainer._g_loss(4)
    torch.manual_seed(3)
    z = trainer._latents(4)
    expected = 0.5 * mode_seeking_loss(trainer.generator(z), z)
    torch.testing.assert_close(weighted - plain, expected, rtol=1e-4, atol=1e-5)
    assert weighted.requires_grad


def test_imle_matches_each_real_image_to_its_nearest_sample():
    from fpa_export.training.imle import imle_loss, nearest_latents

    def generate(z):
        return z.view(-1, 1, 2, 2)

    pool = torch.randn(40, 4)
    reals = generate(pool[[7, 31, 7]] + 0.01)  # near samples 7, 31 and 7 again
    chosen = nearest_latents(generate, reals, pool, chunk=16)  # chunking must not change the answer
    torch.testing.assert_close(chosen, pool[[7, 31, 7]])
    weights = torch.ones(4, requires_grad=True)
    loss = imle_loss(lambda z: generate(z * weights), reals, pool)
    assert float(loss.detach()) == pytest.approx(1e-4, rel=1e-3)
    loss.backward()
    assert weights.grad is not None and torch.all(torch.isfinite(weights.grad))


def test_imle_warm_up_trains_the_generator_alone_then_hands_over_to_the_gan():
    from tests.conftest import tiny_config
    from fpa_export.training.trainer import Trainer, TrainConfig

    trainer = Trainer(tiny_config(image_size=16), TrainConfig(imle_steps=2, imle_pool=3, **SMALL_D))
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    g_before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(2):
        stats = trainer.step([reals])
        assert set(stats) == {"imle", "g_loss", "ema"} and math.isfinite(stats["imle"])
    for key, value in trainer.discriminator.state_dict().items():
        torch.testing.assert_close(value, d_before[key], rtol=0, atol=0)
    assert any(not torch.equal(v, g_before[k]) for k, v in trainer.generator.state_dict().items())
    stats = trainer.step([reals])  # step 2: the GAN takes over
    assert "d_loss" in stats and "imle" not in stats and trainer.step_count == 3
