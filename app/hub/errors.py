from corral.errors import ProblemError
from corral.hub.client import HubClient, HubError, HubUnavailable


def hub_problem(error: HubError) -> ProblemError:
    # An unavailable Hub (down, hanging, rate-limiting, every slot taken) is worth retrying, later: clients are
    # told when.
    headers = {"Retry-After": str(error.retry_after_seconds)} if isinstance(error, HubUnavailable) else None
    problem = ProblemError(error.message, headers=headers)
    problem.status, problem.slug = error.status, error.slug
    problem.title = "Hub unavailable" if error.status == 503 else "Hub error" if error.status == 502 else "Not found"
    return problem


def refuse_when_the_hub_is_full(client: HubClient) -> None:
    """503 with Retry-After at once when every Hub slot is taken: before the request reads or locks anything."""
    try:
        client.refuse_when_full()
    except HubError as error:
        raise hub_problem(error) from None
