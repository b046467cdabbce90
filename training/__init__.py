"""Training of Fast Weight Painters (FPA_SPEC §6): data sets, discriminator, losses, EMA, loop, `fpa-train`.

Imports `models`; nothing in `fpa_export` imports this package.
"""
