"""`fpa-train --resume`: the options left out continue the run; the ones given must fit it.

A run is resumed with `fpa-train --out runs/x --resume` alone. Every option not given on the command line
takes the run's own value: the model from latest.pt's config, the training recipe from its train state,
the run options (data, --steps, periods, metric) from config.json. An option given anyway either

- must equal the run's, for what fixes the weights' shapes (the model, the U-Net, the discriminator):
  otherwise one line names the option and the run's value; or
- overrides the run's (a lower --lr after a non-finite loss, a larger --steps), said in one line.

A run's value is taken as the option would take it on the command line: one it does not take (a
hand-edited `"log_every": null` in config.json) is one line naming the file and the option.

`--device` and `--progress` belong to the machine and the terminal, never to the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import click

from fpa_export.common.cli import given as _given
from fpa_export.common.errors import FpaError
from .runfolder import read_latest, run_record

_join = lambda items: ",".join(str(item) for item in items)  # noqa: E731  tuples as the CLI writes them

# CLI name → how to read the run's value (model config, train config, run options) ----------------------
MODEL_FIELDS = ("image_size", "num_steps", "latent_size", "mini_latent_size", "input_size", "hidden_size",
                "num_layers", "input_generator", "input_tanh", "latent_to_init", "key_softmax",
                "value_tanh", "lr_sigmoid", "lr_per_row", "out_tanh", "step_embedding", "wide_out_dim")
FPA_FIXED: dict[str, Callable[[dict, dict], object]] = {
    **{name: (lambda key: lambda model, train: model[key])(name) for name in MODEL_FIELDS},
    "channels": lambda model, train: str(model["channels"]),
}
D_FIXED: dict[str, Callable[[dict, dict], object]] = {
    "fmap_max": lambda model, train: train["fmap_max"],
    "d_attn_res": lambda model, train: _join(train["attn_res_layers"]),
    "d_attn_heads": lambda model, train: train["attn_heads"],
    "d_attn_dim_head": lambda model, train: train["attn_dim_head"],
    "d_minibatch_std": lambda model, train: train["minibatch_std"],
}
UNET_FIXED: dict[str, Callable[[dict, dict], object]] = {
    "unet_dim": lambda model, train: model["unet"]["dim"],
    "unet_dim_mults": lambda model, train: _join(model["unet"]["dim_mults"]),
}
TRAIN_FREE: dict[str, Callable[[dict, dict], object]] = {
    **{name: (lambda key: lambda model, train: train[key])(name)
       for name in ("batch_size", "grad_accum", "lr", "gp_every", "aug_prob", "mode_seeking", "imle_steps",
                    "imle_pool", "amp", "seed")},
    **{f"ema_{name}": (lambda key: lambda model, train: train["ema"][key])(name)
       for name in ("beta", "start", "every", "reset_every", "reset_until")},
    "aug_types": lambda model, train: _join(train["aug_types"]),
}
RUN_FREE = ("data", "steps", "log_every", "sample_every", "save_every", "eval_every", "eval_count", "metric")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    """A run's value as a message shows it: an empty one (no attention widths) as '' (none)."""
    return "'' (none)" if value == "" else str(value)


def run_settings(out: Path) -> Optional[tuple[dict, dict, Optional[dict]]]:
    """(model config, train config, config.json's record or None when it is missing or unreadable) of
    the run in `out`, or None when there is no latest.pt (the run's own resume then says "nothing to
    resume")."""
    path = out / "latest.pt"
    if not path.is_file():
        return None
    ckpt = read_latest(out)
    model, train = ckpt.get("config"), (ckpt.get("train_state") or {}).get("train_config")
    if not isinstance(model, dict) or not isinstance(train, dict):
        raise FpaError(f"{path}: has no train_state, cannot resume")
    return model, train, run_record(out)


def adopt(ctx: click.Context, kw: dict, fixed: dict, free: dict, unet: bool = False,
          unet_from: Optional[Path] = None, settings: Optional[tuple] = None) -> tuple[dict, str]:
    """(`kw` with the run's values for the options not given, a line naming each given option of `free`
    that overrides the run's ('' when none)); FpaError (one line) for a given option of `fixed` that
    differs from the run's, for a run whose config.json is lost when --data is not given (the run
    options would silently be the defaults: another data set, other periods), for a run of the other
    stage (`unet`: this is `fpa-train unet`), and for a U-Net run given a --from (`unet_from`) other
    than its own. `settings`: the run's `run_settings`, when the caller has read them already."""
    out = Path(kw["out"])
    settings = settings if settings is not None else run_settings(out)
    if settings is None:
        return kw, ""
    model, train, record = settings
    _check_stage(out, model, unet)
    if unet_from is not None:
        _check_source(out, record, unet_from)
    run = None if record is None else record["run"]
    lost = run is None
    if lost and not _given(ctx, "data"):
        raise FpaError(f"{Path(kw['out']) / 'config.json'}: missing or unreadable, so the run's --data, "
                       "--steps and periods are unknown; resume with them given (at least --data)")
    unrecorded = [name for name in RUN_FREE if not lost and name not in run and not _given(ctx, name)]
    if "data" in unrecorded:
        raise FpaError(f"{out / 'config.json'}: records no --data, so the run's data set is unknown; "
                       "resume with --data given")
    readers = {**fixed, **free, **{name: (lambda key: lambda m, t: run[key])(name)
                                   for name in RUN_FREE if not lost and name in run}}
    kw, changed = dict(kw), []
    for name, read in readers.items():
        try:
            theirs = read(model, train)
        except (KeyError, TypeError):
            continue  # an older run without this setting: the command line's value stands
        if not _given(ctx, name):
            kw[name] = _as_option_takes(ctx, name, theirs, out / ("config.json" if name in RUN_FREE
                                                                  else "latest.pt"))
        elif kw[name] != theirs and name in fixed:
            part = "discriminator" if name in D_FIXED else "model"
            raise FpaError(f"{_flag(name)} {kw[name]}: the run in {kw['out']} has {_shown(theirs)}; a "
                           f"resumed run keeps its {part} (drop {_flag(name)}, or start a new run with "
                           "another --out)")
        elif kw[name] != theirs:
            changed.append(f"{_flag(name)} {kw[name]} (the run had {_shown(theirs)})")
    if lost:
        changed.append("the run options not given at their defaults (config.json was missing or unreadable)")
    elif unrecorded:
        changed.append(f"{', '.join(_flag(name) for name in unrecorded)} at the default (config.json does "
                       "not record the run's)")
    return kw, f"Resuming with {', '.join(changed)}" if changed else ""


def _as_option_takes(ctx: click.Context, name: str, value, source: Path):
    """The run's `value` for option `name`, as the option would have taken it on the command line; a
    value the option does not take (a hand-edited `"log_every": null`) is one line naming `source`."""
    param = next((p for p in ctx.command.params if p.name == name), None)
    if param is None or (value is None and param.default is None):
        return value
    whole = isinstance(param.type, click.types.IntParamType)
    try:
        if value is None or isinstance(value, (list, dict)) or (whole and type(value) is not int) \
                or (param.type is click.STRING and not isinstance(value, str)):
            raise click.BadParameter(f"{value!r} is not a value it takes")
        converted = param.type.convert(value, param, ctx)
        return param.callback(ctx, param, converted) if param.callback else converted
    except click.BadParameter as err:
        raise FpaError(f"{source}: the run's {_flag(name)} is {value!r}, which {_flag(name)} does not "
                       f"take ({err.message}); restore the file, or give {_flag(name)}") from None


def _check_stage(out: Path, model: dict, unet_stage: bool) -> None:
    """The resuming command must be the run's: `fpa-train unet` for a U-Net run, plain `fpa-train` else."""
    if bool(model.get("unet")) == unet_stage:
        return
    if unet_stage:
        raise FpaError(f"{out}: holds an FPA run, not a U-Net run; resume it with: fpa-train --out {out} "
                       "--resume")
    raise FpaError(f"{out}: holds a U-Net run; resume it with: fpa-train unet --out {out} --resume")


def _check_source(out: Path, record: Optional[dict], source: Path) -> None:
    """A resumed U-Net run keeps the frozen FPA it started from (its weights are in latest.pt, so --from
    is not needed to resume): a --from other than the run's recorded one is refused. A recorded file
    that no longer exists (moved) cannot be compared; the record is kept either way."""
    theirs = (record or {}).get("from")
    if not isinstance(theirs, str) or not Path(theirs).exists():
        return
    if not Path(theirs).samefile(source):
        raise FpaError(f"--from {source}: the run in {out} was started from {theirs}; a resumed U-Net run "
                       "keeps its frozen FPA (drop --from, or start a new run with another --out)")


def check_preset(ctx: click.Context, kw: dict, preset: dict) -> None:
    """An explicit --d-preset on --resume must name the run's discriminator: every preset value not
    overridden by its own option must equal the run's (already adopted into `kw`)."""
    if not kw.get("resume") or not _given(ctx, "d_preset"):
        return
    for name, value in preset.items():
        if not _given(ctx, name) and kw.get(name) is not None and kw[name] != value:
            raise FpaError(f"--d-preset {kw['d_preset']}: the run in {kw['out']} has {_flag(name)} "
                           f"{kw[name]!r}, not {value!r}; a resumed run keeps its discriminator (drop "
                           "--d-preset)")
