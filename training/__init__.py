"""Training of Fast Weight Painters (docs/MODEL.md §6): data sets, discriminator, losses, EMA, loop and
`fpa-train`.

Imports `models`; nothing in `fpa_export` imports this package.
"""
