"""Latent codes that depend only on (seed, index): the reason sampling is batch- and shard-independent.

Image i of a run with seed s is painted from z_i = psi · randn(d), where randn draws from a torch CPU
generator seeded with the first 63 bits of sha256("fpa-sample/v1:{s}:{i}"). Every index owns its own
stream, so z_i does not depend on the batch size, on --n, on the shard or on the backend; a counter-
free hash (rather than seed + i) keeps neighbouring seeds from sharing streams.

Truncation (psi in (0, 1]): an FPA has no mapping network, so the truncation trick acts on z itself —
z is scaled toward the mean of its prior (0) by psi. psi = 1 is plain sampling; smaller psi trades
diversity for typicality.

The draws are torch's, and need no torch where `randn.exact_here()`: there numpy reproduces torch's CPU
randn bit for bit (`fpa_export.sampling.randn`), so sampling an exported graph starts without importing
torch. Elsewhere torch draws them.
"""
from __future__ import annotations

import hashlib
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from fpa_export.common.errors import FpaError
from . import randn

LATENT_RULE = ("z_i = psi * randn(d) from torch.Generator().manual_seed(first 63 bits of "
               "sha256('fpa-sample/v1:{seed}:{i}')), one generator per index")


def index_seed(seed: int, index: int) -> int:
    """The 63-bit torch seed of image `index` in a run with `seed`."""
    digest = hashlib.sha256(f"fpa-sample/v1:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def latents_for(indices: Sequence[int], seed: int, latent_size: int, truncation: float = 1.0):
    """z for each index: a float32 torch tensor (len(indices), latent_size), row k depends only on
    (seed, indices[k]) — `latent_array` as a tensor."""
    import torch

    return torch.from_numpy(latent_array(indices, seed, latent_size, truncation))


def latent_array(indices: Sequence[int], seed: int, latent_size: int,
                 truncation: float = 1.0) -> np.ndarray:
    """z for each index: float32 numpy (len(indices), latent_size); the one latent rule."""
    check_truncation(truncation)
    check_seed(seed)
    seeds = [index_seed(seed, index) for index in indices]
    if latent_size >= 16 and randn.exact_here():
        z = randn.randn_rows(seeds, latent_size)
    else:
        z = _torch_draws(seeds, latent_size)
    return z * np.float32(truncation) if truncation != 1.0 else z


def _torch_draws(seeds: Sequence[int], latent_size: int) -> np.ndarray:
    import torch

    generator = torch.Generator(device="cpu")
    z = torch.empty(len(seeds), latent_size)
    for row, seed in enumerate(seeds):
        generator.manual_seed(seed)
        torch.randn(latent_size, generator=generator, out=z[row])
    return z.numpy()


def check_seed(seed: int) -> None:
    """Seeds are non-negative integers, in every command (as `parse_seed_range` lists them)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FpaError(f"a seed is a non-negative integer, got {seed!r}")


def check_truncation(truncation: float) -> None:
    """psi is a real number in (0, 1]."""
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float, np.integer, np.floating)) \
            or not 0.0 < truncation <= 1.0:
        raise FpaError(f"--truncation must be in (0, 1] (1 = none), got {truncation}")


def parse_shard(text: str | None, environ: Optional[Mapping[str, str]] = None) -> tuple[int, int]:
    """'I/N' → (I, N) with 0 ≤ I < N; None → (0, 1); 'env' → ($RANK, $WORLD_SIZE), as set by torchrun."""
    if text is None:
        return 0, 1
    if text == "env":
        environ = os.environ if environ is None else environ
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            raise FpaError("--shard env needs RANK and WORLD_SIZE in the environment (torchrun sets them)")
        text = f"{environ['RANK']}/{environ['WORLD_SIZE']}"
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise FpaError(f"--shard wants I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise FpaError(f"--shard {text}: need 0 ≤ I < N")
    return index, count


def shard_indices(n: int, shard: tuple[int, int] = (0, 1)) -> range:
    """The indices of shard (I, N) among 0..n-1: every N-th index starting at I."""
    index, count = shard
    return range(index, n, count)


MAX_LISTED_SEEDS = 100_000  # a list of seeds names networks or tiles, never a sampling run's indices


def parse_seed_range(text: str) -> list[int]:
    """'3' → [3]; '0-7' → [0, …, 7]; '1,4,9' → [1, 4, 9] (ranges allowed inside lists); seeds are
    non-negative and at most `MAX_LISTED_SEEDS` are listed."""
    usage = f"seeds must look like 3, 0-7 or 1,4,9 (non-negative), got {text!r}"
    seeds: list[int] = []
    try:
        parts = str(text).split(",")
        for number, part in enumerate(parts):
            part = part.strip()
            if not part and number == len(parts) - 1:
                continue  # '4,': a trailing comma
            if not part:  # '0,,1', ',1': a seed left out by mistake, not nothing
                raise FpaError(f"seeds {text!r}: an empty item between commas; list seeds like 1,4,9")
            first, dash, last = part.partition("-")
            low, high = int(first), int(last) if dash else int(first)  # '0-' is no range: int('') fails
            if low < 0:
                raise ValueError
            if high < low:
                raise FpaError(f"seeds {part!r}: a range runs upwards ({high}-{low}), in {text!r}")
            if len(seeds) + high - low + 1 > MAX_LISTED_SEEDS:
                raise FpaError(f"{text!r} lists more than {MAX_LISTED_SEEDS:,} seeds")
            seeds.extend(range(low, high + 1))
    except FpaError:
        raise
    except ValueError:
        raise FpaError(usage) from None
    if not seeds:
        raise FpaError(usage)
    return seeds
