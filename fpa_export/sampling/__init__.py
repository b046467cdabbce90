"""Sampling for FID: deterministic, resumable, sharded folders of `{i:06d}.png` (docs/SAMPLING.md).

    from fpa_export.sampling import SampleRun, sample_folder
    report = sample_folder(SampleRun("out/samples", n=1000, seed=0), model="ckpt.pt")
"""
from .latents import LATENT_RULE, latents_for, parse_seed_range, parse_shard, shard_indices
from .manifest import MANIFEST, FolderMismatch
from .pipeline import SampleReport, SampleRun, iter_samples, sample_folder

__all__ = ["SampleRun", "SampleReport", "sample_folder", "iter_samples", "latents_for", "parse_shard",
           "parse_seed_range", "shard_indices", "LATENT_RULE", "MANIFEST", "FolderMismatch"]
