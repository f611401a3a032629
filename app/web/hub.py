"""Links to the Hugging Face Hub go through here: a redirect to the configured Hub (CORRAL_HUB_ENDPOINT, which
may be a mirror), so the pages themselves never name another origin, and follow the mirror where one is set."""

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import RedirectResponse

from corral.fields import CommitSha
from corral.registry.models.router import RepoIdDep
from corral.state import state_of
from corral.web.pages import PAGE_METHODS, page_router

router = page_router()


@router.api_route("/hub/{owner}/{name}", methods=PAGE_METHODS)
async def hub_link(
    model: RepoIdDep, request: Request, revision: Annotated[CommitSha | None, Query()] = None
) -> RedirectResponse:
    """The model's page on the Hub, or its files at one commit: a redirect."""
    # Only validated repo segments and a sha reach the URL, and only ever on the Hub's host: no open redirect.
    endpoint: str = state_of(request).settings.hub_endpoint.rstrip("/")
    target = f"{endpoint}/{model}" + (f"/tree/{revision}" if revision else "")
    return RedirectResponse(target, status_code=307)
