from app.errors import ProblemError
from app.hub.client import HubError


def hub_problem(error: HubError) -> ProblemError:
    problem = ProblemError(error.message)
    problem.status, problem.slug = error.status, error.slug
    problem.title = "Hub unavailable" if error.status == 503 else "Hub error" if error.status == 502 else "Not found"
    return problem
