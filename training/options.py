"""Names the `fpa-train` options offer, torch-free, so `fpa-train --help` answers at once."""

AUG_TYPES = ("flip", "cutout", "translation")  # DiffAugment's transforms (training.augment)
MAX_SEED = 2**32 - 1  # --seed: what numpy and torch both take, with room for the per-step offsets
