# syntax=docker/dockerfile:1
# scarmon's image: the package, its pinned runtime dependencies (deploy/requirements.lock), CPU torch, non-root.
#
#   docker build -t scarmon .                                   # CPU torch (default)
#   docker build -t scarmon:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                --build-arg TORCH_SPEC=torch==2.13.0+cu128 .   # CUDA variant (run with --gpus all)
#   docker run --rm scarmon monitor --site sites/baige.yaml     # entry point: the scarmon CLI
#
# Every RUN line marked "# install-step" is also run, in order, in a clean venv by tests/test_deploy.py (CI has no
# Docker daemon): the install path of this image is what CI checks.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0+cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VENV=/opt/scarmon
WORKDIR /src
RUN python -m venv "$VENV"
COPY deploy/requirements.lock deploy/requirements.lock
# install-step: torch first, alone, from the CPU index: a looser install pulls the CUDA build (GBs)
RUN "$VENV/bin/pip" install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
# install-step: every other runtime dependency, pinned (torch already satisfies its pin)
RUN grep -v '^torch==' deploy/requirements.lock > /tmp/rest.lock && "$VENV/bin/pip" install -r /tmp/rest.lock
# install-step: sam2 declares torch>=2.5.1 and torchvision: no deps, no build isolation, no CUDA extension
RUN SAM2_BUILD_CUDA=0 "$VENV/bin/pip" install --no-build-isolation --no-deps sam2==1.1.0
COPY pyproject.toml README.md ./
COPY scarmon/ scarmon/
# install-step: the package itself (its dependencies are all in the lock above)
RUN "$VENV/bin/pip" install --no-deps . && "$VENV/bin/scarmon" --version

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/scarmon/bin:$PATH \
    DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/tmp/prefect MPLCONFIGDIR=/tmp/matplotlib HOME=/home/scarmon \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SCARMON_HOME=/app SCARMON_SITES=/app/sites
RUN groupadd --gid 10001 scarmon && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin scarmon
COPY --from=build /opt/scarmon /opt/scarmon
WORKDIR /app
# deployment entry points and configuration (read-only for the service user)
COPY flows/ flows/
COPY deploy/ deploy/
COPY sites/ sites/
USER 10001:10001
ENTRYPOINT ["scarmon"]
CMD ["--help"]
