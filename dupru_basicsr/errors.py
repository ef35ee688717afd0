"""The user errors of dupru-basicsr: the input is wrong, and the message names what and how to fix it. Every
command prints one of these as a single `<prog>: error: <message>` line and exits with status 2
(`dupru_basicsr.utils.cli.run_command`).

They live here, below `utils` and `plugin`, so that both can name them; `plugin.option_base`, `plugin.resume` and
`plugin.lock` (where they are raised) import them from here and keep exporting them.
"""
import difflib


class OptionError(ValueError):
    """A wrong or inconsistent option; the message names the key and the fix."""


class ResumeError(RuntimeError):
    """No usable training state to resume from (all candidates are unreadable or inconsistent)."""


class LockError(RuntimeError):
    """The experiment folder is in use by another process, or cannot be locked; the message names it and the fix."""


def did_you_mean(name, known):
    """' Did you mean "<closest of known>"?' for a message about an unknown `name`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f' Did you mean "{close[0]}"?' if close else ''
