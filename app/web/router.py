"""Server-rendered pages (Jinja2), one module per group; no script, no CDN, nothing fetched from elsewhere.

leaderboard.py   /  /leaderboards/{suite}
models.py        /models  /models/{owner}/{name}
evaluations.py   /evaluations/{id}  /queue
runners.py       /runners
hub.py           /hub/{owner}/{name}: a redirect to the model on the configured Hub
pages.py         what they share: templates, READ on every route, GET and HEAD, errors as HTML for browsers
"""

from fastapi import APIRouter

from corral.web import evaluations, hub, leaderboard, models, runners

router = APIRouter()
for group in (leaderboard, models, evaluations, runners, hub):
    router.include_router(group.router)
