# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target api -t corral .            # the service: `corral serve`
#   docker build --target runner -t corral-runner .  # the runner agent, with lm-eval
ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/corral
WORKDIR /src
# Dependencies first (cached while only the source changes), then the project itself.
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY evals ./evals
COPY migrations ./migrations
RUN /opt/corral/bin/pip install .

FROM build AS build-runner
RUN /opt/corral/bin/pip install '.[runner]'

FROM ${PYTHON} AS api
RUN useradd --create-home --uid 10001 corral && mkdir /data && chown corral /data
COPY --from=build /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    CORRAL_HOST=0.0.0.0 \
    CORRAL_PORT=8000 \
    CORRAL_DATABASE_URL=sqlite+aiosqlite:////data/corral.db
USER corral
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CORRAL_PORT', '8000')}/healthz\", timeout=4)"]
ENTRYPOINT ["corral"]
CMD ["serve"]

FROM ${PYTHON} AS runner
RUN useradd --create-home --uid 10001 corral
COPY --from=build-runner /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER corral
WORKDIR /home/corral
ENTRYPOINT ["corral-runner"]
CMD ["--help"]
