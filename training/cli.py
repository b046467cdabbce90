"""`fpa-train`: train an FPA (default command) or the U-Net stage on a trained FPA (`fpa-train unet`)."""
from __future__ import annotations

from pathlib import Path

import click

from fpa_export.common.cli import HELP_OPTIONS, Group, friendly_errors, given, nonempty_path, version_option
from fpa_export.common.devices import device_option
from .options import AUG_TYPES, MAX_SEED
from .resume_options import (D_FIXED, FPA_FIXED, MODEL_FIELDS, TRAIN_FREE, UNET_FIXED, adopt, check_preset,
                             run_settings)

# Discriminator sizes. 'paper' is lightweight-gan's (docs/MODEL.md §6); 'cpu-small' is the D of the shipped
# default model (tools/train_default.sh): channel cap 64, no attention before the 32-px stage, 2 × 16 heads.
D_PRESETS = {
    "paper": dict(fmap_max=512, d_attn_res="32", d_attn_heads=8, d_attn_dim_head=64),
    "cpu-small": dict(fmap_max=64, d_attn_res="", d_attn_heads=2, d_attn_dim_head=16),
}
PAPER_HIDDEN_SIZE = 1024

CTX = {"show_default": True, "max_content_width": 100, **HELP_OPTIONS}


def _interrupted(params: dict) -> str:
    """What Ctrl-C leaves: the last checkpoint to resume from, or (before the first) nothing to resume."""
    out = params.get("out")
    if out is not None and (Path(out) / "latest.pt").is_file():
        return "Interrupted; the last checkpoint is kept (continue with --resume)."
    return "Interrupted before the first checkpoint; nothing to resume (run the command again as it was)."


_friendly = friendly_errors(interrupted=_interrupted)


def _options(specs):
    def apply(func):
        for args, kwargs in reversed(specs):
            func = click.option(*args, **kwargs)(func)
        return func
    return apply


def _aug_types(ctx, param, value: str) -> str:
    """--aug-types as given (or as a resumed run records it): every name one of AUG_TYPES."""
    bad = [x.strip() for x in value.split(",") if x.strip() and x.strip() not in AUG_TYPES]
    if bad:
        raise click.BadParameter(f"unknown augmentation(s) {', '.join(bad)}", ctx, param)
    return value


RUN_OPTIONS = [
    (("--data",), dict(default="mnist", callback=lambda ctx, param, value: nonempty_path(ctx, param, value) and value,
                       help="image folder (recursive) or built-in: mnist, digits, lfw")),
    (("--out",), dict(required=True, type=click.Path(file_okay=False), callback=nonempty_path,
                      help="run folder (runs/NAME)")),
    (("--steps",), dict(default=10000, type=click.IntRange(1), help="total optimiser steps")),
    (("--batch-size",), dict(default=20, type=click.IntRange(1), help="images per micro-batch and process")),
    (("--grad-accum",), dict(default=1, type=click.IntRange(1), help="micro-batches per step")),
    (("--device",), dict(default="cpu", callback=device_option, help="cpu, cuda, cuda:N or mps")),
    (("--resume",), dict(is_flag=True, help="continue the run in --out from its latest.pt; options left "
                                            "out keep the run's values")),
    (("--lr",), dict(default=2e-4, type=float, help="Adam learning rate (betas 0.5, 0.9)")),
    (("--gp-every",), dict(default=4, type=click.IntRange(0), help="gradient penalty every N steps (0 = off)")),
    (("--ema-beta",), dict(default=0.995, type=float)),
    (("--ema-start",), dict(default=20000, type=click.IntRange(0), help="EMA updates only after this step")),
    (("--ema-every",), dict(default=10, type=click.IntRange(1), help="EMA update period")),
    (("--ema-reset-every",), dict(default=1000, type=click.IntRange(1), help="hard reset EMA←G period")),
    (("--ema-reset-until",), dict(default=25000, type=click.IntRange(-1), help="no resets after this step")),
    (("--aug-prob",), dict(default=0.0, type=click.FloatRange(0, 1), help="DiffAugment probability")),
    (("--aug-types",), dict(default=",".join(AUG_TYPES), callback=_aug_types, help=f"comma list of {', '.join(AUG_TYPES)}")),
    (("--d-preset",), dict(default="auto", type=click.Choice(list(D_PRESETS) + ["auto"]),
                           help="D size: 'paper' (lightweight-gan's), 'cpu-small' (the default model's); "
                                "auto = paper for a paper-size generator (H >= 1024), else cpu-small")),
    (("--fmap-max",), dict(default=None, type=click.IntRange(8), help="D: channel cap (overrides --d-preset)")),
    (("--d-attn-res",), dict(default=None, help="D: comma list of widths with attention ('' = none)")),
    (("--d-attn-heads",), dict(default=None, type=click.IntRange(1), help="D: attention heads")),
    (("--d-attn-dim-head",), dict(default=None, type=click.IntRange(1), help="D: channels per head")),
    (("--d-minibatch-std",), dict(default=0, type=click.IntRange(0),
                                  help="D: minibatch-std group size before the logits (0 = off, as the paper)")),
    (("--mode-seeking",), dict(default=0.0, type=click.FloatRange(0),
                               help="G: weight of the mode-seeking diversity loss (0 = off, as the paper)")),
    (("--imle-steps",), dict(default=0, type=click.IntRange(0),
                             help="G-only IMLE warm-up steps before the GAN (0 = off, as the paper)")),
    (("--imle-pool",), dict(default=8, type=click.IntRange(1), help="IMLE: latents drawn per real image")),
    (("--amp",), dict(is_flag=True, help="fp16 mixed precision (CUDA only; ignored on CPU)")),
    (("--seed",), dict(default=42, type=click.IntRange(0, MAX_SEED),
                       help="seeds the weights, the data order and the noise")),
    (("--log-every",), dict(default=10, type=click.IntRange(1))),
    (("--sample-every",), dict(default=500, type=click.IntRange(1), help="PNG grid of EMA samples")),
    (("--save-every",), dict(default=500, type=click.IntRange(1), help="latest.pt period")),
    (("--eval-every",), dict(default=1000, type=click.IntRange(0), help="quality metric + best.pt (0 = off)")),
    (("--eval-count",), dict(default=1000, type=click.IntRange(2), help="images per side for the metric")),
    (("--metric",), dict(default="pixel", type=click.Choice(["pixel", "rvgg"]),
                         help="quality metric: pooled pixels (cheap) or random-VGG features")),
    (("--progress/--no-progress",), dict(default=True, help="progress bar on stderr")),
]

MODEL_OPTIONS = [
    (("--image-size",), dict(default=64, type=click.IntRange(16), help="S (power of two)")),
    (("--channels",), dict(default=3, type=click.Choice(["1", "3"]), help="1 = greyscale")),
    (("--num-steps",), dict(default=64, type=click.IntRange(1), help="T: painting steps")),
    (("--latent-size",), dict(default=512, type=click.IntRange(1), help="d")),
    (("--mini-latent-size",), dict(default=8, type=click.IntRange(1), help="m (v2)")),
    (("--input-size",), dict(default=128, type=click.IntRange(1), help="e (v2)")),
    (("--hidden-size",), dict(default=1024, type=click.IntRange(1), help="H")),
    (("--num-layers",), dict(default=1, type=click.IntRange(1), help="LSTM layers")),
    (("--input-generator",), dict(default="v2", type=click.Choice(["v1", "v2"]))),
    (("--input-tanh/--no-input-tanh",), dict(default=True)),
    (("--latent-to-init/--no-latent-to-init",), dict(default=True)),
    (("--key-softmax/--no-key-softmax",), dict(default=True)),
    (("--value-tanh/--no-value-tanh",), dict(default=False)),
    (("--lr-sigmoid/--no-lr-sigmoid",), dict(default=True)),
    (("--lr-per-row/--no-lr-per-row",), dict(default=False)),
    (("--out-tanh/--no-out-tanh",), dict(default=True)),
    (("--step-embedding/--no-step-embedding",), dict(default=False)),
    (("--wide-out-dim",), dict(default=0, type=click.IntRange(0))),
]

UNET_OPTIONS = [
    (("--unet-dim",), dict(default=None, type=click.IntRange(1), show_default="the image size, as official",
                           help="U-Net channels of level 1")),
    (("--unet-dim-mults",), dict(default="1,2,4", help="U-Net channel multipliers")),
    (("--base",), dict(default="raw", type=click.Choice(["raw", "ema"]),
                       help="frozen FPA weights: the checkpoint's raw G (official) or its EMA generator")),
    (("--fresh-d",), dict(is_flag=True, help="fresh discriminator and D optimiser instead of continuing "
                                             "the source run's (official --load_only_g --reset_d_optimizer)")),
]
D_OPTION_NAMES = ("d_preset", "fmap_max", "d_attn_res", "d_attn_heads", "d_attn_dim_head", "d_minibatch_std")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected a comma list of integers, got {text!r}") from None


def resolve_d_preset(kw: dict, hidden_size: int) -> dict:
    """The D options with unset ones filled from --d-preset (auto: by the generator's size)."""
    name = kw.get("d_preset", "auto")
    if name == "auto":
        name = "paper" if hidden_size >= PAPER_HIDDEN_SIZE else "cpu-small"
    preset = D_PRESETS[name]
    return {**kw, **{k: preset[k] for k in preset if kw.get(k) is None}, "d_preset": name}


def check_attention_widths(ctx: click.Context, kw: dict, image_size: int) -> None:
    """A given --d-attn-res width must be one of the discriminator's stage widths (S, S/2, …, 16), where
    attention can sit; any other would silently train without it."""
    if not given(ctx, "d_attn_res"):
        return
    from .discriminator import stage_widths

    widths = stage_widths(image_size)
    bad = [width for width in _ints(kw["d_attn_res"]) if width not in widths]
    if bad:
        raise click.BadParameter(f"{bad[0]} is not a width of the discriminator's stages at image size "
                                 f"{image_size} ({', '.join(map(str, widths))}); attention there would never "
                                 "run", param_hint="--d-attn-res")


def _train_config(kw: dict):
    from .ema import EMASchedule
    from .trainer import TrainConfig

    aug = tuple(x.strip() for x in kw["aug_types"].split(",") if x.strip())  # checked: `_aug_types`
    ema = EMASchedule(beta=kw["ema_beta"], start=kw["ema_start"], every=kw["ema_every"],
                      reset_every=kw["ema_reset_every"], reset_until=kw["ema_reset_until"])
    return TrainConfig(batch_size=kw["batch_size"], grad_accum=kw["grad_accum"], lr=kw["lr"],
                       gp_every=kw["gp_every"], ema=ema, aug_prob=kw["aug_prob"], aug_types=aug,
                       fmap_max=kw["fmap_max"], attn_res_layers=_ints(kw["d_attn_res"]),
                       attn_heads=kw["d_attn_heads"], attn_dim_head=kw["d_attn_dim_head"],
                       minibatch_std=kw["d_minibatch_std"], mode_seeking=kw["mode_seeking"],
                       imle_steps=kw["imle_steps"], imle_pool=kw["imle_pool"],
                       amp=kw["amp"], seed=kw["seed"])


def _recorded_data(ctx: click.Context, kw: dict) -> dict:
    """A given --data as the run records it (a folder by its absolute path), so that a resume compares
    like with like."""
    from .data import recorded_data

    return {**kw, "data": recorded_data(kw["data"])} if given(ctx, "data") else kw


def _run_options(kw: dict):
    from .loop import RunOptions

    return RunOptions(data=kw["data"], steps=kw["steps"], device=kw["device"], log_every=kw["log_every"],
                      sample_every=kw["sample_every"], save_every=kw["save_every"],
                      eval_every=kw["eval_every"], eval_count=kw["eval_count"], metric=kw["metric"],
                      progress=kw["progress"])


def _report(out: str, result: dict) -> None:
    best = "" if result["best"] == float("inf") else f", best FD {result['best']:.4g}"
    skipped = f", {result['skipped']} unreadable image(s) skipped" if result.get("skipped") else ""
    names = [name for name in ("latest.pt", "best.pt") if (Path(out) / name).is_file()]
    where = f"checkpoints in {out}/ ({', '.join(names)})" if names else f"no checkpoint written in {out}/"
    click.echo(f"Trained to step {result['step']}{best}{skipped}: {where}")


class _DefaultGroup(Group):
    """`fpa-train OPTIONS` runs the `fpa` command; `fpa-train unet OPTIONS` the U-Net stage."""

    gc_thresholds = None  # hours of training: Python's default garbage collection (common.cli)

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["fpa", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings=CTX)
@version_option("fpa-train")
def main():
    """Train Fast Weight Painters (GAN, docs/MODEL.md §6).

    \b
    Examples:
      fpa-train --data mnist --image-size 32 --channels 1 --num-steps 16 --hidden-size 256 --out runs/mnist
      fpa-train --data photos/ --out runs/photos --resume
      fpa-train unet --from runs/photos/best.pt --data photos/ --out runs/photos_unet
      torchrun --nproc_per_node 2 -m fpa_export.training.cli --data photos/ --device cuda --out runs/ddp
    """


@main.command("fpa", context_settings=CTX)
@_options(MODEL_OPTIONS + RUN_OPTIONS)
@_friendly
@click.pass_context
def fpa_command(ctx, **kw):
    """Train an FPA from scratch into the run folder --out (the default command).

    \b
    Examples:
      fpa-train fpa --data mnist --image-size 32 --channels 1 --out runs/mnist
      fpa-train --data faces/ --image-size 64 --num-steps 64 --out runs/faces --steps 450000
    """
    from fpa_export.models import FPAConfig
    from .api import train_fpa

    kw = _recorded_data(ctx, kw)
    note = ""
    if kw["resume"]:  # the options left out continue the run, the given ones must fit it
        kw, note = adopt(ctx, kw, fixed={**FPA_FIXED, **D_FIXED}, free=TRAIN_FREE)
    model = FPAConfig(channels=int(kw["channels"]), **{k: kw[k] for k in MODEL_FIELDS})
    kw = resolve_d_preset(kw, model.hidden_size)
    check_preset(ctx, kw, D_PRESETS[kw["d_preset"]])
    check_attention_widths(ctx, kw, model.image_size)
    if note:
        click.echo(note, err=True)
    result = train_fpa(kw["out"], model, _train_config(kw), _run_options(kw), resume=kw["resume"])
    _report(kw["out"], result)


def _fpa_source(ctx, param, value):
    """--from: an existing checkpoint file, or 'default' (the embedded model); None when not given."""
    from fpa_export.common.errors import not_a_file
    from fpa_export.models import DEFAULT_MODEL, default_checkpoint_path

    if value is None:
        return None
    if value == DEFAULT_MODEL:
        return Path(default_checkpoint_path())
    if not Path(value).is_file():
        raise click.BadParameter(not_a_file(value), ctx, param)
    return Path(value)


@main.command("unet", context_settings=CTX)
@click.option("--from", "source", default=None, callback=_fpa_source,
              help="checkpoint of a trained FPA run (latest.pt or best.pt), or 'default' (the embedded "
                   "model); with --resume the run's own frozen FPA is used and --from may be left out")
@_options(UNET_OPTIONS + RUN_OPTIONS)
@_friendly
@click.pass_context
def unet_command(ctx, source, **kw):
    """Train the U-Net refinement of a trained FPA (docs/MODEL.md §5); the FPA stays bit-identical.

    As the official recipe: the frozen FPA is the checkpoint's raw generator (--base ema: its EMA one),
    the discriminator and its Adam state continue (--fresh-d: new ones), G's optimiser is fresh.

    \b
    Examples:
      fpa-train unet --from runs/faces/best.pt --data faces/ --out runs/faces_unet
      fpa-train unet --from runs/mnist/latest.pt --data mnist --unet-dim 16 --fresh-d --out runs/mnist_unet
    """
    from fpa_export.models import UNetConfig, read_checkpoint
    from .api import train_unet

    kw = _recorded_data(ctx, kw)
    d_given = [name for name in D_OPTION_NAMES if given(ctx, name)]
    if d_given and not kw["fresh_d"]:
        raise click.UsageError(f"--{d_given[0].replace('_', '-')}: the discriminator continues from --from "
                               "with its own layout; D options apply only with --fresh-d")
    settings = run_settings(Path(kw["out"])) if kw["resume"] else None
    if settings is not None:  # the model and discriminator are the run's own; see fpa_command
        kw, note = adopt(ctx, kw, fixed={**UNET_FIXED, **D_FIXED}, free=TRAIN_FREE, unet=True,
                         unet_from=source, settings=settings)
        if note:
            click.echo(note, err=True)
    if settings is None and source is None:
        raise click.UsageError("Missing option '--from': the trained FPA checkpoint to start from")
    config = settings[0] if settings is not None else read_checkpoint(source)["config"]
    kw = resolve_d_preset(kw, config["hidden_size"])  # used only with --fresh-d
    check_attention_widths(ctx, kw, config["image_size"])
    dim = kw["unet_dim"] or config["image_size"]
    unet = UNetConfig(channels=config["channels"], dim=dim, dim_mults=_ints(kw["unet_dim_mults"]))
    result = train_unet(kw["out"], source, unet, _train_config(kw), _run_options(kw), resume=kw["resume"],
                        base=kw["base"], fresh_d=kw["fresh_d"])
    _report(kw["out"], result)


if __name__ == "__main__":
    main()
