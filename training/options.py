"""Names the `fpa-train` options offer, torch-free, so `fpa-train --help` answers at once."""

AUG_TYPES = ("flip", "cutout", "translation")  # DiffAugment's transforms (training.augment)
