"""Exceptions of monai-t1t2.

Every error that a user can cause (bad file, bad folder, bad option) is a
:class:`T1T2Error`; the command line prints its message on one line and exits 2.
"""


class T1T2Error(Exception):
    """Base class of the errors a user can cause; the message says what to fix."""


class InvalidVolumeError(T1T2Error):
    """A file is missing, unreadable, not a single 3D volume, or holds bad values."""


class GridMismatchError(T1T2Error):
    """Two volumes that must share a voxel grid (shape and affine) do not."""


class OutputExistsError(T1T2Error):
    """An output file exists and overwriting was not asked for, or it is an input."""


class OutputLocationError(T1T2Error):
    """An output folder cannot be created or written (a file in the way, read-only, not a real file system)."""


class DatasetError(T1T2Error):
    """A data folder or datalist is missing, empty, or badly laid out."""
