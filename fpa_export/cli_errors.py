"""One rule for every command line (see `models.cli_errors`, where it lives so `fpa-train` shares it)."""
from models.cli_errors import UserError, friendly_errors

__all__ = ["UserError", "friendly_errors"]
