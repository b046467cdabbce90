"""The ground floor: what every room needs and no room owns (STYLE.md, "The house").

    errors.py    the error classes every command turns into one line (`FpaError`, `MissingExtra`)
    atomic.py    atomic writes (temp file + fsync + rename), JSON included
    images.py    image conventions: uint8 rule, CHW/HWC, the real-image transform
    optional.py  lazy imports of optional packages, each with the pip line that installs it
    lock.py      one advisory lock per output folder
    devices.py   --device validation
    version.py   the package version, from the installed metadata
    cli.py       the one-line error rule of every command line (click), -h, --version

Nothing here imports any other part of fpa_export (images.py: torch, numpy, Pillow only).
"""
