"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad spec, missing data, wrong layout).

    The message names the problem and the fix; it is shown without a traceback.
    """


class DatasetMissing(UserError):
    """A dataset is not present under the data root; `how_to_get` says how to fetch it."""

    def __init__(self, name: str, reason: str, how_to_get: str = ""):
        self.name, self.reason, self.how_to_get = name, reason, how_to_get
        msg = f"dataset {name!r}: {reason}"
        if how_to_get:
            msg += f" ({how_to_get})"
        super().__init__(msg)
