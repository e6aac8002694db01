"""Errors that reach a user as one clear line (the CLI exits 2 on them, the plugin reports
them as the snapshot's error), never as a traceback."""


class SideeyeError(Exception):
    """A problem the user can act on; str() is the one line to show."""

    exit_code = 2


class NotGoBinary(SideeyeError):
    pass


class MissingDebugInfo(SideeyeError):
    pass


class TargetGone(SideeyeError):
    pass


class NoPermission(SideeyeError):
    pass


class BpfUnavailable(SideeyeError):
    pass


class CaptureSpecError(SideeyeError):
    pass


class DockerUnavailable(SideeyeError):
    pass
