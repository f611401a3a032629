from app.errors import ProblemError
from app.hub.client import HubError

HUB_RETRY_SECONDS = 30


def hub_problem(error: HubError) -> ProblemError:
    # An unavailable Hub (down, hanging, rate-limiting) is worth retrying, later: clients are told when.
    headers = {"Retry-After": str(HUB_RETRY_SECONDS)} if error.status == 503 else None
    problem = ProblemError(error.message, headers=headers)
    problem.status, problem.slug = error.status, error.slug
    problem.title = "Hub unavailable" if error.status == 503 else "Hub error" if error.status == 502 else "Not found"
    return problem
