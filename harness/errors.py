"""The project's exception types. The CLI turns each into one line and an exit code."""

from __future__ import annotations


class DeepgapError(Exception):
    """Base class: anything a user can cause or fix. Printed as one line, no traceback."""

    exit_code = 2


class ConfigError(DeepgapError):
    """Bad flag values, bad user.conf or profile YAML, inconsistent settings."""


class DeviceError(DeepgapError):
    """The requested GPU profile or precision does not match the visible hardware."""


class DatasetError(DeepgapError):
    """Missing or malformed dataset folder, unreadable images."""


class BackendError(DeepgapError):
    """A backend is unavailable, or failed while loading or running."""


class OutputError(DeepgapError):
    """The results directory cannot be written, or would overwrite an earlier result."""


class RunFailed(DeepgapError):
    """The benchmark ran but the system under test failed during it."""

    exit_code = 3


class StudyError(DeepgapError):
    """A study directory is missing, unreadable or not a deepgap.study/1 file."""
