"""Error types shared by the whole package.

Every error a user can cause (a bad file, a bad flag, a weight file that does not match) derives from
`MgbpError`; the command-line entry point turns it into one line on stderr and exit code 2.
"""


class MgbpError(Exception):
    """Base class of the errors a user can cause; its message is shown as it is, on one line."""


class ImageReadError(MgbpError):
    """An input image is missing, unreadable, truncated, empty or of an unsupported kind."""


class WeightFileError(MgbpError):
    """A weight file is missing, corrupt, or does not match the architecture it claims."""


class ConfigError(MgbpError):
    """A configuration value or a command-line option is invalid."""


class NumericalError(MgbpError):
    """A model produced NaN or infinite values (bad weights, or an overflow in reduced precision)."""
