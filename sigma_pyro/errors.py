"""User-facing errors.

Every failure caused by the user's input (a file, a flag, a checkpoint) is raised as a
subclass of :class:`SigmaPyroError` with a one-line message that names the file, line, column
or flag. The CLI prints that line and exits with status 2; Python users can catch the class.
"""


class SigmaPyroError(Exception):
    """Base class for errors whose message is meant for the user, not a traceback."""


class DataError(SigmaPyroError):
    """Malformed or unusable interaction data."""


class ConfigError(SigmaPyroError):
    """Impossible or unknown settings (flags, presets, YAML files)."""


class CheckpointError(SigmaPyroError):
    """A saved model that is missing, truncated, corrupted or untrusted."""


class TrainingError(SigmaPyroError):
    """Training cannot continue (for example a non-finite ELBO)."""


class SigmaPyroWarning(UserWarning):
    """Input partly unusable but still answered (unknown ids skipped, for example); the CLI
    prints it as one ``sigma-pyro: warning:`` line."""
