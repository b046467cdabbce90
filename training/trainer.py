"""One GAN training iteration of the FPA (docs/MODEL.md §6) and the state a run resumes from.

Per iteration (`Trainer.step`), for each of `grad_accum` micro-batches:
- discriminator: D sees reals (with the auxiliary reconstruction loss) and detached fakes in one forward
  pass; loss = hinge(full head) + hinge(32-px head) + aux MSE (+ 10·gradient penalty every 4th step);
- generator: fresh latents, loss = mean D(fake) + mean D₃₂(fake) (D frozen for this pass), plus the
  optional mode-seeking term (`mode_seeking` > 0; not in the paper);
before step `imle_steps` (0 by default) the iteration is instead an IMLE warm-up of G alone
(`training.imle`; not in the paper);
then Adam steps (2e-4, betas 0.5/0.9) and the EMA schedule (`training.ema`).

U-Net stage (`unet_stage=True`, docs/MODEL.md §5): the FPA part of the generator is frozen and its canvas is
computed without gradients; only the U-Net is optimised and averaged. For every model with a U-Net (the
stage, and an FPA+U-Net trained end to end) the discriminator's hinge terms are halved, as the official
code does for all its `*_unet` models (its `hinge_loss_bis` divides the summed hinge terms by the number
of real plus fake images).

A NaN gradient penalty is skipped for that step (`if not torch.isnan(gp)` in the official code) and
counted (`gp_skipped`); with mixed precision, so is one that overflows fp16 (possible while the loss
scale is still high), while the scaler lowers its scale.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields
import math

import torch
from torch import nn

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAConfig, FPAGenerator
from .augment import AUG_TYPES, diff_augment
from .discriminator import Discriminator
from .ema import EMASchedule, apply_schedule
from .imle import imle_loss
from .losses import d_hinge_loss, g_hinge_loss, gradient_penalty, mode_seeking_loss
from .options import MAX_SEED


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 20                    # images per micro-batch (per process under DDP)
    grad_accum: int = 1                     # micro-batches per optimiser step
    lr: float = 2e-4                        # Adam learning rate of G and D
    betas: tuple[float, float] = (0.5, 0.9)
    gp_every: int = 4                       # gradient penalty on steps ≡ 0 (mod gp_every)
    gp_weight: float = 10.0
    ema: EMASchedule = field(default_factory=EMASchedule)
    aug_prob: float = 0.0                   # DiffAugment probability (0 = off, the official default)
    aug_types: tuple[str, ...] = AUG_TYPES     # applied in this order (training.augment)
    fmap_max: int = 512                     # D: channel cap of the residual stages
    attn_res_layers: tuple[int, ...] = (32,)  # D: widths where linear attention precedes a stage
    attn_heads: int = 8                     # D: heads of every attention layer (official: 8)
    attn_dim_head: int = 64                 # D: channels per head (official: 64)
    minibatch_std: int = 0                  # D: ProGAN minibatch-std group before the logits (0 = off, official)
    mode_seeking: float = 0.0               # G: weight of the mode-seeking loss (0 = off, official)
    imle_steps: int = 0                     # G only: IMLE warm-up steps before the GAN (0 = off, official)
    imle_pool: int = 8                      # IMLE: latents drawn per real image
    amp: bool = False                       # fp16 autocast + grad scaling (CUDA only)
    seed: int = 42
    unet_stage: bool = False                # train only the U-Net on a frozen FPA

    def __post_init__(self):
        if not 0 < self.lr < math.inf:  # also NaN
            raise FpaError(f"--lr must be a positive finite number, got {self.lr}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise FpaError(f"--seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        if not 0.0 <= self.aug_prob <= 1.0:  # also NaN
            raise FpaError(f"--aug-prob must be a probability in [0, 1], got {self.aug_prob}")
        if not 0.0 <= self.mode_seeking < math.inf:  # also NaN; inf would end in a non-finite loss
            raise FpaError(f"--mode-seeking must be a finite number >= 0, got {self.mode_seeking}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise FpaError(f"Adam betas must be in [0, 1), got {self.betas}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        data["ema"] = EMASchedule(**data.get("ema", {}))
        for key in ("betas", "aug_types", "attn_res_layers"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def generator_trainables(generator: FPAGenerator, unet_stage: bool) -> list[nn.Parameter]:
    """What the G optimiser and the EMA cover: everything, or only the U-Net in the U-Net stage."""
    module = generator.unet if unet_stage else generator
    return list(module.parameters())


class FrozenFPAUNet(nn.Module):
    """U-Net stage forward: the FPA canvas without gradients, then the trainable U-Net (and tanh)."""

    def __init__(self, generator: FPAGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            canvas = self.generator.canvas(z)  # (B, C, S, S), no gradient into the FPA
        return self.generator.finish(canvas)


class Trainer:
    """Generator, its EMA copy, discriminator, optimisers and step counter; `step(reals)` trains once."""

    def __init__(self, model_config: FPAConfig, config: TrainConfig, device: str = "cpu",
                 generator: FPAGenerator | None = None, wrap=None):
        self.config, self.device, self.step_count = config, torch.device(device), 0
        self.halve_hinge = config.unet_stage or model_config.unet is not None  # official hinge_loss_bis
        self.gp_skipped = 0  # gradient penalties skipped (NaN, or fp16 overflow) since step 0
        torch.manual_seed(config.seed)
        self.generator = (generator or FPAGenerator(model_config)).to(self.device).train()
        self.ema_generator = FPAGenerator(model_config).to(self.device).eval()
        self.ema_generator.load_state_dict(self.generator.state_dict())
        self.ema_generator.requires_grad_(False)
        self.discriminator = Discriminator(model_config.image_size, model_config.channels,
                                           config.fmap_max, config.attn_res_layers,
                                           config.attn_heads, config.attn_dim_head,
                                           config.minibatch_std).to(self.device)
        if config.unet_stage:
            self.generator.requires_grad_(False)
            self.generator.unet.requires_grad_(True)
        self.g_params = generator_trainables(self.generator, config.unet_stage)
        self.ema_params = generator_trainables(self.ema_generator, config.unet_stage)
        self.opt_g = torch.optim.Adam(self.g_params, lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=config.betas)
        use_amp = config.amp and self.device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp \
            else contextlib.nullcontext
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_amp)
        wrap = wrap or (lambda module: module)  # DDP wrapper under torchrun
        painter = FrozenFPAUNet(self.generator) if config.unet_stage else self.generator
        self.g_train, self.d_train = wrap(painter), wrap(self.discriminator)

    # -- one iteration ----------------------------------------------------------------------------
    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.generator.latent_size, device=self.device)

    def _fake(self, count: int) -> torch.Tensor:
        return self.g_train(self._latents(count))

    def _sync(self, module, last: bool):
        return contextlib.nullcontext() if last or not hasattr(module, "no_sync") else module.no_sync()

    def _d_loss(self, reals: torch.Tensor, apply_gp: bool) -> dict:
        cfg = self.config
        with torch.no_grad(), self.autocast():
            fakes = self._fake(reals.shape[0])
        reals = reals.requires_grad_(apply_gp)
        with self.autocast():
            both = torch.cat([diff_augment(reals, cfg.aug_prob, cfg.aug_types),
                              diff_augment(fakes.float(), cfg.aug_prob, cfg.aug_types)])
            logits, logits_32, aux = self.d_train(both, aux_count=reals.shape[0])
            n = reals.shape[0]
            divergence = d_hinge_loss(logits[:n], logits[n:]) + d_hinge_loss(logits_32[:n], logits_32[n:])
            if self.halve_hinge:
                divergence = divergence / 2
            loss = divergence + aux
        out = {"d_loss": loss, "aux": aux.detach(), "divergence": divergence.detach()}
        if apply_gp:
            scale = self.scaler_d.get_scale() if self.scaler_d.is_enabled() else 1.0
            gp = gradient_penalty(reals, [logits[:n].float(), logits_32[:n].float()], scale)
            if torch.isnan(gp) or (self.scaler_d.is_enabled() and not torch.isfinite(gp)):
                out["gp_skipped"] = torch.ones(())  # official: skipped; fp16: the scaler lowers its scale
            else:
                out["gp"] = gp.detach()
                out["d_loss"] = loss + cfg.gp_weight * gp
        return out

    def _g_loss(self, count: int) -> torch.Tensor:
        cfg = self.config
        with self.autocast():
            latents = self._latents(count)
            fakes = self.g_train(latents)
            both = diff_augment(fakes, cfg.aug_prob, cfg.aug_types)
            logits, logits_32, _ = self.discriminator(both)
            loss = g_hinge_loss(logits) + g_hinge_loss(logits_32)
        if cfg.mode_seeking > 0:
            loss = loss + cfg.mode_seeking * mode_seeking_loss(fakes.float(), latents)
        return loss

    def _imle_step(self, micro_batches: list[torch.Tensor]) -> dict:
        """One warm-up step (training.imle): G alone, D untouched."""
        accum = len(micro_batches)
        self.opt_g.zero_grad(set_to_none=True)
        total = 0.0
        for i, reals in enumerate(micro_batches):
            with self._sync(self.g_train, i == accum - 1):
                with self.autocast():
                    pool = self._latents(reals.shape[0] * self.config.imle_pool)
                    loss = imle_loss(self.g_train, reals.to(self.device), pool)
                self.scaler_g.scale(loss / accum).backward()
            total += float(loss.detach()) / accum
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        return {"imle": total, "g_loss": total}

    def step(self, micro_batches: list[torch.Tensor]) -> dict:
        """One optimiser step over `micro_batches` (GAN, or IMLE during the warm-up), then the EMA rule."""
        warm_up = self.step_count < self.config.imle_steps
        stats = self._imle_step(micro_batches) if warm_up else self._gan_step(micro_batches)
        stats["ema"] = apply_schedule(self.config.ema, self.step_count, self.ema_params, self.g_params)
        self.step_count += 1
        return stats

    def _gan_step(self, micro_batches: list[torch.Tensor]) -> dict:
        """D then G, as in the paper; returns float losses."""
        cfg, accum = self.config, len(micro_batches)
        apply_gp = cfg.gp_every > 0 and self.step_count % cfg.gp_every == 0
        self.opt_d.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        for i, reals in enumerate(micro_batches):
            with self._sync(self.d_train, i == accum - 1):
                losses = self._d_loss(reals.to(self.device), apply_gp)
                self.scaler_d.scale(losses["d_loss"] / accum).backward()
            for key, value in losses.items():
                stats[key] = stats.get(key, 0.0) + float(value.detach()) / accum
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        if stats.get("gp_skipped"):
            self.gp_skipped += 1

        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        for i, reals in enumerate(micro_batches):
            with self._sync(self.g_train, i == accum - 1):
                g_loss = self._g_loss(reals.shape[0])
                self.scaler_g.scale(g_loss / accum).backward()
            stats["g_loss"] = stats.get("g_loss", 0.0) + float(g_loss.detach()) / accum
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.discriminator.requires_grad_(True)
        return stats

    # -- resumable state ----------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything but the EMA weights (which are the checkpoint's state_dict): tensors/primitives."""
        state = {
            "train_config": self.config.to_dict(),
            "generator": {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()},
            "discriminator": {k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "gp_skipped": self.gp_skipped,
        }
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state(self, state: dict, ema_state: dict, step: int) -> None:
        """`state` as `state()` wrote it (`state_problem` is None for it); StateMismatch naming the
        part that does not load (another discriminator layout, or an edited file)."""
        parts = [("generator", lambda: self.generator.load_state_dict(state["generator"])),
                 ("EMA generator (state_dict)", lambda: self.ema_generator.load_state_dict(ema_state)),
                 ("discriminator", lambda: self.discriminator.load_state_dict(state["discriminator"])),
                 ("opt_g", lambda: self.opt_g.load_state_dict(state["opt_g"])),
                 ("opt_d", lambda: self.opt_d.load_state_dict(state["opt_d"]))]
        if state.get("scaler_g"):
            parts += [("scaler_g", lambda: self.scaler_g.load_state_dict(state["scaler_g"])),
                      ("scaler_d", lambda: self.scaler_d.load_state_dict(state["scaler_d"]))]
        parts += [("rng_cpu", lambda: torch.set_rng_state(state["rng_cpu"]))]
        if "rng_cuda" in state and self.device.type == "cuda":
            parts += [("rng_cuda", lambda: torch.cuda.set_rng_state(state["rng_cuda"], self.device))]
        for part, load in parts:
            try:
                load()
            except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
                raise StateMismatch(part, err) from None
        for group in self.opt_g.param_groups + self.opt_d.param_groups:
            group["lr"] = self.config.lr  # this run's --lr (Adam's state dict brings the saved one back)
        self.step_count = int(step)
        self.gp_skipped = int(state.get("gp_skipped", 0))


class StateMismatch(FpaError):
    """A part of a train_state that does not load into this trainer: `part` (its key) and `detail`."""

    DISCRIMINATOR_PARTS = ("discriminator", "opt_d", "scaler_d")

    def __init__(self, part: str, err: Exception):
        self.part = part
        text = " ".join(line.strip() for line in str(err).splitlines()[:2] if line.strip())
        if len(text) > 160:  # torch's "Error(s) in loading …:" and what, cut at a word
            text = text[:160].rsplit(" ", 1)[0] + " …"
        self.detail = f"{type(err).__name__}: {text}"
        super().__init__(f"its {part} does not load ({self.detail})")


STATE_DICTS = ("train_config", "generator", "discriminator", "opt_g", "opt_d")  # `Trainer.state`'s dicts
DISCRIMINATOR_FIELDS = ("fmap_max", "attn_res_layers", "attn_heads", "attn_dim_head", "minibatch_std")  # D's layout


def state_problem(state: dict) -> "str | None":
    """What makes `state` (a checkpoint's train_state) other than `Trainer.state` writes it, in words,
    or None: checked before a resume loads any of it, so an edited or foreign file is one line, not a
    traceback or a misleading "does not fit"."""
    for key in STATE_DICTS:
        if not isinstance(state.get(key), dict):
            return f"its train_state {'lacks' if key not in state else 'has no dict for'} {key!r}"
    try:
        TrainConfig.from_dict(state["train_config"])
    except (TypeError, ValueError, AttributeError, FpaError) as err:
        return f"its train_state's 'train_config' does not parse ({type(err).__name__}: {err})"[:240]
    for key in ("opt_g", "opt_d"):
        groups = state[key].get("param_groups")
        if not isinstance(state[key].get("state"), dict) or not isinstance(groups, list) \
                or not all(isinstance(group, dict) for group in groups):
            return f"its train_state's {key!r} is not an optimiser state (a 'state' and 'param_groups')"
    for key in ("scaler_g", "scaler_d"):
        if (state.get(key) is not None or (key == "scaler_d" and state.get("scaler_g"))) \
                and not isinstance(state.get(key), dict):
            return f"its train_state's {key!r} is not a dict"
    rng = state.get("rng_cuda")
    if "rng_cuda" in state and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
                                    and rng.dim() == 1):
        return "its train_state's 'rng_cuda' is not a random-number generator state"
    saved = torch.get_rng_state()
    try:  # the CPU generator's own check (type, size, an all-zero state): tried, then put back
        torch.set_rng_state(state.get("rng_cpu"))
    except (TypeError, RuntimeError):
        return "its train_state's 'rng_cpu' is not a random-number generator state"
    finally:
        torch.set_rng_state(saved)
    for key, kinds in (("gp_skipped", (int,)), ("best", (int, float))):
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"its train_state's {key!r} is {value!r}, not a number"
    return None
