"""Library entry points behind `fpa-train`: `train_fpa` (stage 1) and `train_unet` (stage 2)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import torch

from fpa_export.common.images import check_outside
from fpa_export.models import FPAConfig, FPAGenerator, UNetConfig, read_checkpoint
from . import data as datasets
from . import ddp, runfolder
from .loop import Run, RunOptions, TrainingError
from .trainer import DISCRIMINATOR_FIELDS, Trainer, TrainConfig

BASES = ("raw", "ema")


def train_fpa(out: str | Path, model: FPAConfig, train: TrainConfig, options: RunOptions,
              resume: bool = False) -> dict:
    """Train an FPA (any FPAConfig, U-Net included end to end) into the run folder `out`."""
    return _run(out, model, train, options, resume)


def train_unet(out: str | Path, fpa_checkpoint: Optional[str | Path], unet: UNetConfig, train: TrainConfig,
               options: RunOptions, resume: bool = False, base: str = "raw", fresh_d: bool = False) -> dict:
    """Stage 2 (docs/MODEL.md §5): a U-Net on top of the frozen FPA of `fpa_checkpoint`.

    As the official recipe: the frozen base is the checkpoint's raw generator G (`base="ema"`: its EMA
    generator instead), the discriminator and its Adam state continue from the checkpoint's train state
    (`fresh_d=True`: a fresh D and optimiser, the official `--load_only_g --reset_d_optimizer`), and
    the generator's optimiser is fresh. The discriminator layout of a continued D is the source run's.
    A resumed run continues from its own latest.pt, which holds the frozen FPA: `fpa_checkpoint` is not
    read (it may be None, moved or trained further since), and the run's record of where its FPA came
    from (config.json's `from`, `from_step`, `base`, `discriminator`) is kept."""
    if base not in BASES:
        raise TrainingError(f"base must be one of {', '.join(BASES)}, got {base!r}")
    if resume and (Path(out) / "latest.pt").is_file():
        return _resume_unet(Path(out), fpa_checkpoint, unet, train, options)
    if fpa_checkpoint is None:
        raise TrainingError("the U-Net stage starts from a trained FPA checkpoint: give it (--from)")
    ckpt = read_checkpoint(fpa_checkpoint)
    model_base = FPAConfig.from_dict(ckpt["config"])
    if model_base.unet is not None:
        raise TrainingError(f"{fpa_checkpoint}: already has a U-Net; pass a plain FPA checkpoint")
    state = ckpt.get("train_state") or {}
    weights = _base_weights(fpa_checkpoint, ckpt, state, base)
    d_init = None if fresh_d else _continued_d(fpa_checkpoint, state)
    if d_init is not None:
        source_train = TrainConfig.from_dict(state.get("train_config", {}))
        train = dataclasses.replace(train, **{k: getattr(source_train, k) for k in DISCRIMINATOR_FIELDS})
    model = model_base.replace(unet=unet)
    torch.manual_seed(train.seed)  # the U-Net's initial weights
    generator = FPAGenerator(model)
    missing, unexpected = generator.load_state_dict(weights, strict=False)
    if unexpected or not all(key.startswith("unet.") for key in missing):
        raise TrainingError(f"{fpa_checkpoint}: weights do not fit the FPA+U-Net model")
    train = dataclasses.replace(train, unet_stage=True)
    meta = {"from": os.path.abspath(fpa_checkpoint), "from_step": int(ckpt["step"]), "base": base,
            "discriminator": "fresh" if d_init is None else "continued (weights and Adam state)"}
    return _run(out, model, train, options, resume, generator=generator, d_init=d_init, meta=meta)


UNET_RECORD = ("from", "from_step", "base", "discriminator")  # config.json: where the frozen FPA came from


def _resume_unet(out: Path, fpa_checkpoint, unet: UNetConfig, train: TrainConfig,
                 options: RunOptions) -> dict:
    """A U-Net run continued from its latest.pt, with its own model, frozen FPA and discriminator layout
    (its weights are loaded by `Run.resume`, which refuses another U-Net)."""
    ckpt = runfolder.read_latest(out)
    model = FPAConfig.from_dict(ckpt["config"])
    if model.unet is None:
        raise TrainingError(f"{out}: holds an FPA run, not a U-Net run; resume it with train_fpa "
                            f"(fpa-train --out {out} --resume)")
    own = TrainConfig.from_dict((ckpt.get("train_state") or {}).get("train_config", {}))
    train = dataclasses.replace(train, unet_stage=True, **{k: getattr(own, k) for k in DISCRIMINATOR_FIELDS})
    record = runfolder.run_record(out) or {}
    meta = {key: record[key] for key in UNET_RECORD if key in record}
    if "from" not in meta and fpa_checkpoint is not None:  # config.json was lost: the given source
        meta["from"] = os.path.abspath(fpa_checkpoint)
    return _run(out, model.replace(unet=unet), train, options, True, meta=meta)


def _base_weights(path, ckpt: dict, state: dict, base: str) -> dict:
    if base == "ema":
        return ckpt["state_dict"]
    raw = state.get("generator")
    if not isinstance(raw, dict):
        raise TrainingError(f"{path}: holds no raw generator (no train_state); pass a checkpoint "
                            "written by fpa-train (latest.pt or best.pt), or --base ema for its EMA weights")
    return raw


def _continued_d(path, state: dict) -> Optional[dict]:
    """The source run's discriminator, its optimiser and its grad scaler (to continue them)."""
    if not isinstance(state.get("discriminator"), dict) or not isinstance(state.get("opt_d"), dict):
        raise TrainingError(f"{path}: holds no discriminator state to continue; pass a checkpoint "
                            "written by fpa-train with its train_state, or --fresh-d")
    return {"discriminator": state["discriminator"], "opt_d": state["opt_d"],
            "scaler_d": state.get("scaler_d")}


def _start_discriminator(trainer: Trainer, d_init: dict, lr: float) -> None:
    """Load D, D's Adam state (its step counts continue) and D's grad scaler into `trainer`."""
    try:
        trainer.discriminator.load_state_dict(d_init["discriminator"])
        trainer.opt_d.load_state_dict(d_init["opt_d"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise TrainingError(f"the source run's discriminator does not fit ({type(err).__name__}); "
                            "pass --fresh-d") from None
    for group in trainer.opt_d.param_groups:
        group["lr"] = lr  # this run's --lr (the official code keeps the source's; they agree by default)
    if d_init.get("scaler_d"):
        trainer.scaler_d.load_state_dict(d_init["scaler_d"])


def _run(out, model, train, options, resume, generator=None, d_init=None, meta=None) -> dict:
    out = Path(out)
    options = dataclasses.replace(options, data=datasets.recorded_data(options.data))
    if Path(options.data).is_dir():  # the run's sample grids would be read back as training data
        check_outside(out, options.data)
    info = ddp.setup(options.device)
    try:
        with runfolder.locked(out, info.rank == 0):
            if info.rank == 0:
                runfolder.sweep_stale_temp_files(out)
            return _locked_run(out, model, train, options, resume, info, generator, d_init, meta)
    finally:
        ddp.teardown(info)


def _locked_run(out, model, train, options, resume, info, generator, d_init, meta) -> dict:
    """The run itself, with the run folder locked and swept."""
    if (out / "latest.pt").exists() and not resume:
        raise TrainingError(f"{out}: already holds a run; pass --resume to continue it or pick a new --out")
    if not resume:
        runfolder.check_fresh(out)  # a user's config.json, log.jsonl, best.pt or grids are kept
    trainer = Trainer(model, train, device=info.device, generator=generator, wrap=ddp.wrapper(info))
    source = datasets.open_source(options.data, model.image_size, model.channels, seed=train.seed)
    if d_init is not None and not resume:
        _start_discriminator(trainer, d_init, train.lr)
    run = Run(out, trainer, source, options, rank=info.rank, world_size=info.world_size, meta=meta)
    if resume:
        run.resume()  # TrainingError when there is nothing to resume or nothing left to do
    else:
        run.truncate_log(0)  # a run killed before its first latest.pt left log lines of its own
        run.write_config()  # the settings of the run (`fpa-train --resume` reads them back)
    result = run.train()
    ddp.barrier(info)
    result["skipped"] = getattr(source, "skipped", 0)
    return result
