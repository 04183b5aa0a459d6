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


class RunFailed(UserError, RuntimeError):
    """Work that failed while running for a reason outside the code (Ray workers lost, retries used up).

    Still one line and exit 2 on the command line; stored work is kept and rerunning resumes. A
    RuntimeError too, so callers that caught the executor's RuntimeError keep working."""


def weights_unavailable(what: str, repo: str | None, error: BaseException, local: str = "") -> str:
    """One line saying why hub weights could not be had and how to pre-download them."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        why = "the Hugging Face Hub is offline (HF_HUB_OFFLINE, or huggingface.co unreachable) and they are not " \
              "in the local cache"
    else:
        first = (str(error).strip().splitlines() or [""])[0][:120]
        why = f"download failed ({type(error).__name__}{': ' + first if first else ''})"
    get = (f"pre-download them where there is network with `hf download {repo}` and copy the Hugging Face cache "
           f"(~/.cache/huggingface, or $HF_HOME) here") if repo else "pre-download them where there is network"
    return f"could not fetch weights for {what}: {why}; {get}" + (f"; or {local}" if local else "")
