"""Exceptions with messages written for the person running the tool."""


class VoxreconError(Exception):
    """A problem the user can fix (bad input, missing weights, existing output...).

    Front ends show ``str(err)`` as it is: a one-line reason and what to do about it.
    """


class InputError(VoxreconError):
    """The input volume or file cannot be used for the requested job."""


class JobCancelled(VoxreconError):
    """The job was cancelled by the user; partial results are consistent up to the last slice."""
