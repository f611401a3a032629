"""Whether this machine can run jobs at all: after a job failed for the machine's sake (no CUDA where the config
asks for it, a GPU gone), no job is taken until the device check `corral-runner doctor` makes passes again."""

import logging
import time

from corral_runner import hardware

log = logging.getLogger("corral.runner")
RECHECK_SECONDS = 60.0  # a fixed machine goes back to work by itself, this soon


class Fitness:
    def __init__(self, device: str | None) -> None:
        self.device = device
        self.problem: str | None = None  # why no job can run here, until the device check passes
        self.checked_at = 0.0

    def failed(self, problem: str) -> None:
        """A job failed because of this machine: take no more until the check passes."""
        self.problem, self.checked_at = problem, time.monotonic()
        log.warning("this machine cannot run jobs (%s): no job is taken until the device check passes", problem)

    def fit(self) -> bool:
        if self.problem is None:
            return True
        if time.monotonic() - self.checked_at < RECHECK_SECONDS:
            return False
        self.checked_at = time.monotonic()
        problem = hardware.device_problem(self.device)
        if problem is not None:
            log.warning("this runner still cannot run jobs: %s", problem)
            return False
        log.info("the device check passes again: taking jobs")
        self.problem = None
        return True
