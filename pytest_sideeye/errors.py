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


class InternalError(SideeyeError):
    """An unexpected exception, a bug, as its one line (bugs.report_line): the agent's
    answer for one of the engine's, raised again by its client."""

    exit_code = 70   # EX_SOFTWARE: a bug, not bad input (2)


def one_line(e: BaseException) -> str:
    """The first line of what an exception says (a Docker API error's explanation when it
    has one), or its type's name when it says nothing."""
    text = str(getattr(e, "explanation", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__
