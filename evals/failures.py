"""What a failed job is, from the error its lm-eval process met: a category the server acts on (retry elsewhere,
retry with more memory, or give up), and whether the machine itself is unfit for any job."""

from corral_runner.protocol import Outcome, ReportedCategory

# The machine lacks what every job on it needs: CUDA in torch, a driver, a device. Another runner may have it;
# this one takes no job until `corral-runner doctor` passes.
UNFIT = (
    "torch not compiled with cuda enabled",
    "found no nvidia driver",
    "cuda driver version is insufficient",
    "no cuda gpus are available",
    "no cuda-capable device",
    "cuda driver initialization failed",
    "nvidia driver on your system is too old",
)


class RunnerSetupError(RuntimeError):
    """This runner lacks something the job needs; another runner may have it (reported as infrastructure)."""


def chain(error: BaseException) -> list[BaseException]:
    """The error and its causes: libraries wrap what went wrong (transformers raises an OSError `from`
    huggingface_hub's GatedRepoError)."""
    links: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in links and len(links) < 10:
        links.append(cause)
        cause = cause.__cause__ or cause.__context__
    return links


def classify(error: BaseException) -> ReportedCategory:
    """infrastructure (network, Hub, this machine) / out_of_memory / model_error (the weights will not load) /
    harness_error."""
    links = chain(error)
    names = {cls.__name__ for link in links for cls in type(link).__mro__}
    text = " ".join(f"{type(link).__name__}: {link}" for link in links).lower()
    if "out of memory" in text or "OutOfMemoryError" in names:
        return "out_of_memory"
    # Not in the cache and the Hub out of reach (a subclass of EntryNotFoundError, hence first); and a gated
    # repo this runner's token cannot open, which another runner's may: both worth a retry elsewhere.
    # A package the backend needs and this runner lacks (vLLM), or CUDA it lacks, is the runner's fault too.
    runner_side = {
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "GatedRepoError",
        "RunnerSetupError",
        "ModuleNotFoundError",
    }
    if names & runner_side or "couldn't connect" in text or any(sign in text for sign in UNFIT):
        return "infrastructure"
    # Before the network check: these are HTTP errors too, but no retry helps until someone changes the repo.
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"}:
        return "model_error"
    if names & {"ConnectionError", "Timeout", "TimeoutError", "HfHubHTTPError", "TransportError"}:
        return "infrastructure"
    if "safetensors" in text or "config.json" in text or "does not appear to have" in text:
        return "model_error"
    return "harness_error"


def outcome_of(error: BaseException) -> Outcome:
    text = " ".join(str(link) for link in chain(error)).lower()
    return Outcome(
        category=classify(error),
        message=f"{type(error).__name__}: {error}",
        unfit=any(sign in text for sign in UNFIT),
    )
