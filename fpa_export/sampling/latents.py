"""Latent codes that depend only on (seed, index): the reason sampling is batch- and shard-independent.

Image i of a run with seed s is painted from z_i = psi · randn(d), where randn draws from a torch CPU
generator seeded with the first 63 bits of sha256("fpa-sample/v1:{s}:{i}"). Every index owns its own
stream, so z_i does not depend on the batch size, on --n, on the shard or on the backend; a counter-
free hash (rather than seed + i) keeps neighbouring seeds from sharing streams.

Truncation (psi in (0, 1]): an FPA has no mapping network, so the truncation trick acts on z itself —
z is scaled toward the mean of its prior (0) by psi. psi = 1 is plain sampling; smaller psi trades
diversity for typicality.
"""
from __future__ import annotations

import hashlib
import os
from typing import Mapping, Optional, Sequence

import torch

from fpa_export.common.errors import FpaError

LATENT_RULE = ("z_i = psi * randn(d) from torch.Generator().manual_seed(first 63 bits of "
               "sha256('fpa-sample/v1:{seed}:{i}')), one generator per index")


def index_seed(seed: int, index: int) -> int:
    """The 63-bit torch seed of image `index` in a run with `seed`."""
    digest = hashlib.sha256(f"fpa-sample/v1:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def latents_for(indices: Sequence[int], seed: int, latent_size: int,
                truncation: float = 1.0) -> torch.Tensor:
    """z for each index: float32 (len(indices), latent_size), row k depends only on (seed, indices[k])."""
    check_truncation(truncation)
    generator = torch.Generator(device="cpu")
    z = torch.empty(len(indices), latent_size)
    for row, index in enumerate(indices):
        generator.manual_seed(index_seed(seed, index))
        torch.randn(latent_size, generator=generator, out=z[row])
    return z * truncation if truncation != 1.0 else z


def check_truncation(truncation: float) -> None:
    if not 0.0 < truncation <= 1.0:
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


def parse_seed_range(text: str) -> list[int]:
    """'3' → [3]; '0-7' → [0, …, 7]; '1,4,9' → [1, 4, 9] (ranges allowed inside lists)."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            first, _, last = part.partition("-")
            low, high = int(first), int(last) if last else int(first)
            if high < low:
                raise ValueError
            seeds.extend(range(low, high + 1))
    except ValueError:
        raise FpaError(f"seeds must look like 3, 0-7 or 1,4,9 (non-negative), got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise FpaError(f"seeds must look like 3, 0-7 or 1,4,9 (non-negative), got {text!r}")
    return seeds
