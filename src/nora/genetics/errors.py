"""Errors raised by the genetics library; each message names the file or module and the fix."""


class GeneticsError(ValueError):
    """Base class: bad input to a genetics operation (the CLI turns it into exit code 2)."""


class GenomeFormatError(GeneticsError):
    """An adapter on disk is missing, malformed, unsafe or inconsistent with its config."""


class IncompatibleParentsError(GeneticsError):
    """Parents cannot be combined: different modules, base shapes, or ranks a method cannot handle."""
