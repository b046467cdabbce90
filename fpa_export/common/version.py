"""The package version, read from one place: the installed distribution's metadata (setup.py)."""
from __future__ import annotations

from importlib import metadata

try:
    PACKAGE_VERSION = metadata.version("fpa-export")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    PACKAGE_VERSION = "0+unknown"
