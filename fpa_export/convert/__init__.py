"""Importing checkpoints of the official research code (IDSIA/fpainter; docs/MODEL.md §7), in one package.

    keys.py      the official key layout, written once (our tensor names ↔ theirs)
    infer.py     hyper-parameters read off the official tensor shapes
    options.py   the converter's options and defaults (torch-free, so `fpa-convert --help` is instant)
    convert.py   `convert_official`: an official `model_<N>.pt` → our checkpoint format
"""
