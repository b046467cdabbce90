"""`fpa-convert`: import a checkpoint of the official research code (IDSIA/fpainter)."""
from __future__ import annotations

import warnings
from pathlib import Path

import click

from ..common.cli import Command, friendly_errors, nonempty_path, version_option
from ..convert.options import DEFAULTS, MODEL_TYPES, WEIGHTS  # torch-free: --help stays fast


def _flag(name: str, official: str):
    """A --NAME/--no-NAME switch whose default is the paper's (DEFAULTS)."""
    key = name.replace("-", "_")
    return click.option(f"--{name}/--no-{name}", key, default=DEFAULTS[key], show_default=True,
                        help=f"Official flag: {official}.")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-convert")
@click.argument("official", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), callback=nonempty_path,
              help="Output checkpoint (our format).")
@click.option("--model-type", type=click.Choice(MODEL_TYPES), default=None,
              show_default="inferred from the keys", help="The official --model_type.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              show_default="inferred; 64 for a v1 file that does not determine it",
              help="Painting steps T (official --num_decoding_steps); checked against the tensors.")
@click.option("--weights", type=click.Choice(WEIGHTS), default="GE", show_default=True,
              help="GE: the EMA generator (what the paper samples from); G: the raw generator.")
@click.option("--strict/--no-strict", default=True, show_default=True,
              help="--no-strict ignores unknown generator keys (with a warning) instead of failing.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow full unpickling (can run code stored in the file) for files that hold "
                   "Python objects beyond tensors. Only for files you trust.")
@click.option("--image-size", type=click.IntRange(min=2), default=None, show_default="inferred",
              help="S; needed only if the kvb layer's size is ambiguous.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, show_default="inferred",
              help="1 (official --greyscale) or 3.")
@_flag("key-softmax", "--use_softmax")
@_flag("out-tanh", "--out_tanh")
@_flag("input-tanh", "--v2_input_sigmoid (it applies tanh; v2 only)")
@_flag("unet-tanh", "--unet_tanh (tanh before the U-Net)")
@_flag("value-tanh", "--val_tanh")
@_flag("lr-sigmoid", "--no_sigmoid_lr turns it off")
@click.option("--unet-groups", type=click.IntRange(min=1), default=DEFAULTS["unet_groups"],
              show_default=True, help="GroupNorm groups of the U-Net (fixed in the official code).")
@click.option("--unet-heads", type=click.IntRange(min=1), default=DEFAULTS["unet_heads"],
              show_default=True, help="U-Net attention heads (fixed in the official code).")
@click.option("--unet-dim-head", type=click.IntRange(min=1), default=DEFAULTS["unet_dim_head"],
              show_default=True, help="U-Net channels per attention head (fixed in the official code).")
@click.option("--force", is_flag=True, help="Replace an existing -o that is not a converted checkpoint "
                                            "(a training run's latest.pt, another file).")
@friendly_errors
def main(official, out, model_type, steps, weights, strict, trust_pickle, force, **options):
    """Convert OFFICIAL (a model_<N>.pt of IDSIA/fpainter) into our checkpoint format.

    Everything the tensor shapes determine (image size, channels, hidden size, latent and
    mini-latent sizes, steps of v2 models, U-Net, per-step embedding, wide layer, per-row learning
    rates) is inferred; the switches default to the paper's recipe (softmax keys, out tanh, input
    tanh, U-Net tanh). An option that contradicts a tensor is an error naming both. The output
    records the official file's name and sha256 and the options used.

    \b
    Examples:
      fpa-convert models/celeba/model_1.pt -o celeba.pt
      fpa-convert model_0.pt -o metfaces.pt --steps 16 --weights G
      fpa-convert model_1.pt -o v1.pt --model-type lstm_delta --steps 64 --no-out-tanh
    """
    from ..convert.convert import ConversionWarning, convert_official
    from fpa_export.models import read_checkpoint

    if options["channels"] is not None:
        options["channels"] = int(options["channels"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            convert_official(official, out, model_type=model_type, steps=steps, weights=weights,
                             strict=strict, trust_pickle=trust_pickle, force=force, **options)
        finally:
            for warning in caught:
                if issubclass(warning.category, ConversionWarning):
                    click.echo(f"Warning: {warning.message}", err=True)
    ckpt = read_checkpoint(out)
    config, source = ckpt["config"], ckpt["source"]
    unet = " + U-Net" if config["unet"] else ""
    click.echo(f"Converted {official} ({source['weights']} weights, {source['model_type']}: "
               f"{config['image_size']}×{config['image_size']}×{config['channels']}, "
               f"{config['num_steps']} steps, hidden {config['hidden_size']}{unet}) to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
