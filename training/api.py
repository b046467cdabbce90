"""Library entry points behind `fpa-train`: `train_fpa` (stage 1) and `train_unet` (stage 2)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fpa_export.models import FPAConfig, FPAGenerator, UNetConfig, load_checkpoint
from . import data as datasets
from . import ddp
from .loop import Run, RunOptions, TrainingError
from .trainer import Trainer, TrainConfig


def train_fpa(out: str | Path, model: FPAConfig, train: TrainConfig, options: RunOptions,
              resume: bool = False) -> dict:
    """Train an FPA (any FPAConfig, U-Net included end to end) into the run folder `out`."""
    return _run(out, model, train, options, resume)


def train_unet(out: str | Path, fpa_checkpoint: str | Path, unet: UNetConfig, train: TrainConfig,
               options: RunOptions, resume: bool = False) -> dict:
    """Stage 2 (FPA_SPEC §5): a U-Net on top of the frozen FPA of `fpa_checkpoint` (its EMA weights)."""
    base, ckpt = load_checkpoint(fpa_checkpoint)
    if base.config.unet is not None:
        raise TrainingError(f"{fpa_checkpoint}: already has a U-Net; pass a plain FPA checkpoint")
    model = base.config.replace(unet=unet)
    torch.manual_seed(train.seed)  # the U-Net's initial weights
    generator = FPAGenerator(model)
    missing, unexpected = generator.load_state_dict(base.state_dict(), strict=False)
    if unexpected or not all(key.startswith("unet.") for key in missing):
        raise TrainingError(f"{fpa_checkpoint}: weights do not fit the FPA+U-Net model")
    train = dataclasses.replace(train, unet_stage=True)
    d_state = (ckpt.get("train_state") or {}).get("discriminator")
    meta = {"from": str(fpa_checkpoint), "from_step": int(ckpt["step"])}
    return _run(out, model, train, options, resume, generator=generator, d_state=d_state, meta=meta)


def _run(out, model, train, options, resume, generator=None, d_state=None, meta=None) -> dict:
    out = Path(out)
    if (out / "latest.pt").exists() and not resume:
        raise TrainingError(f"{out}: already holds a run; pass --resume to continue it or pick a new --out")
    info = ddp.setup(options.device)
    try:
        source = datasets.open_source(options.data, model.image_size, model.channels, seed=train.seed)
        trainer = Trainer(model, train, device=info.device, generator=generator, wrap=ddp.wrapper(info))
        if d_state is not None and not resume:
            _load_matching(trainer.discriminator, d_state)
        run = Run(out, trainer, source, options, rank=info.rank, world_size=info.world_size, meta=meta)
        if resume:
            run.resume()
        if trainer.step_count == 0 or not (out / "config.json").exists():
            run.write_config()
        result = run.train()
        ddp.barrier(info)
        result["skipped"] = getattr(source, "skipped", 0)
        return result
    finally:
        ddp.teardown(info)


def _load_matching(module: torch.nn.Module, state: dict) -> None:
    """Continue the discriminator of stage 1 when its shapes match this run's."""
    own = module.state_dict()
    if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
        module.load_state_dict(state)
