# syntax=docker/dockerfile:1
# Two images from one file (BuildKit, the default builder since Docker 23):
#   docker build --target api -t corral .            # the service: `corral serve`
#   docker build --target runner -t corral-runner .  # the runner agent, with lm-eval (CPU torch by default)
# `compose.yaml` builds both and runs them beside PostgreSQL.
#
# Layers, so that editing the source reinstalls nothing: the dependency lists are read out of pyproject.toml
# in a stage of their own (a change elsewhere in pyproject.toml, a ruff setting, leaves them byte-identical and
# the install layers cached); the dependencies are installed from those lists; only then is the project built
# from its source, as one wheel installed with --no-deps. pip's cache is a BuildKit cache mount, kept between
# builds and never in an image.

# The base, by tag and by digest (the multi-arch index that tag resolved to on 2026-09-15: Python 3.11.16).
# The digest was read from other projects' pinned Dockerfiles and build logs, not pulled from here; move it on
# on purpose: `docker buildx imagetools inspect python:3.11-slim-bookworm` prints the current one.
ARG PYTHON=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

FROM ${PYTHON} AS requirements
# The runner image's extras: lm-eval, and ray + kubernetes for runners that hand jobs to Slurm or Kubernetes.
ARG RUNNER_EXTRAS=runner,cluster
WORKDIR /src
COPY pyproject.toml ./
RUN python - /requirements "$RUNNER_EXTRAS" <<'EOF'
import pathlib, sys, tomllib
out, extras = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
out.mkdir(parents=True, exist_ok=True)
(out / "server.txt").write_text("\n".join(project["dependencies"] + project["optional-dependencies"]["server"]) + "\n")
(out / "runner.txt").write_text("\n".join(r for e in extras for r in project["optional-dependencies"][e]) + "\n")
EOF

FROM ${PYTHON} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/corral
COPY --from=requirements /requirements/server.txt /tmp/server.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/corral/bin/pip install -r /tmp/server.txt

FROM deps AS runner-deps
# PyTorch's CPU wheels (a plain `torch` from PyPI is a multi-GB CUDA build). For a GPU runner image:
#   docker build --target runner --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY constraints/cpu.txt /tmp/constraints.txt
COPY --from=requirements /requirements/runner.txt /tmp/runner.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/corral/bin/pip install --index-url "$TORCH_INDEX" -c /tmp/constraints.txt torch \
 && /opt/corral/bin/pip install -c /tmp/constraints.txt -r /tmp/runner.txt

FROM ${PYTHON} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY evals ./evals
COPY migrations ./migrations
# src/ holds the installed names: links to the three folders above (corral, corral_runner, corral_migrations).
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels .

FROM deps AS build
# --no-deps: the dependencies are in already; `pip check` fails the build if they do not satisfy the wheel.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    /opt/corral/bin/pip install --no-deps /wheels/*.whl && /opt/corral/bin/pip check

FROM runner-deps AS build-runner
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    /opt/corral/bin/pip install --no-deps /wheels/*.whl && /opt/corral/bin/pip check

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
# tini as PID 1: it forwards SIGTERM to the agent and reaps the lm-eval worker processes the agent starts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 corral
COPY --from=build-runner /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER corral
WORKDIR /home/corral
ENTRYPOINT ["tini", "--", "corral-runner"]
CMD ["--help"]
