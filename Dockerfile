# celery-exporter container image.
#
#   docker build -t celery-exporter .
#   docker run --rm -p 9808:9808 -e CE_BROKER_URL=redis://redis:6379/0 celery-exporter
#
# Every flag is also an environment variable (CE_BROKER_URL, CE_QUEUES, ...); flags given after
# the image name are passed to celery-exporter. Keep the listen port in CE_PORT rather than
# --port: the HEALTHCHECK reads CE_PORT. With --web-config-file serving TLS or basic auth on
# /healthz, override the HEALTHCHECK (or pass --web-health-without-auth).
#
# The base images are build arguments (defaults: the official python:${PYTHON_VERSION}-slim, and
# for the build stage the full python:${PYTHON_VERSION}, which has a C compiler); tests/container
# builds this same file on Debian bases made offline with debootstrap:
#   docker build --build-arg BASE_IMAGE=localhost/debian-python:bookworm \
#       --build-arg BUILD_IMAGE=localhost/debian-python-dev:bookworm -t celery-exporter .

ARG PYTHON_VERSION=3.11
# Any Debian-like image with python3, its venv module and useradd.
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim
# The same Python at the same path as BASE_IMAGE (the final stage runs the virtualenv made
# here), plus a C compiler and Python's headers: the tracker is compiled with mypyc (setup.py).
ARG BUILD_IMAGE=python:${PYTHON_VERSION}

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed into a virtualenv that the final stage copies whole, so the image carries neither
# the source tree, the compiler, mypy nor pip's build leftovers.
RUN python3 -m venv /opt/celery-exporter && python3 -m venv /opt/build
WORKDIR /src
# Every dependency from the hash-pinned locks (scripts/lock.sh; resolved for Python 3.11 on
# Linux), never the newest release of the day: the same commit builds the same image. The
# build virtualenv gets the runtime dependencies too, as mypyc type-checks what it compiles
# against them, and mypy, pinned there as it writes the C code. Before the source, so that a
# layer cache keeps this step while only src/ changes.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN /opt/build/bin/pip install -q --require-hashes -r requirements/build.txt \
    && /opt/celery-exporter/bin/pip install -q --require-hashes -r requirements/runtime.txt
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# CE_MYPYC=1: the state package compiled to C (the gain: bench/README.md), counting the same
# (setup.py). --no-deps: the dependencies are the locked ones installed above.
RUN CE_MYPYC=1 /opt/build/bin/pip wheel -q --no-build-isolation --no-deps -w /wheels . \
    && /opt/celery-exporter/bin/pip install -q --no-deps /wheels/*.whl

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="celery-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Celery" \
      org.opencontainers.image.source="https://github.com/celery-exporter/celery-exporter" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/celery-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CE_PORT=9808
# The group gets GID 10001 too: `useradd --user-group` would give it a system GID below 1000,
# leaving the numeric USER's group without a name.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /opt/celery-exporter /opt/celery-exporter
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9808
# The slim image has no curl; Python is there anyway. Any error (refused, timeout, non-2xx)
# raises, and an uncaught exception exits 1, which Docker reads as unhealthy; the hook makes the
# health log one line naming the error instead of a traceback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.excepthook = lambda kind, error, tb: print('unhealthy:', error, file=sys.stderr); urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CE_PORT', '9808') + '/healthz', timeout=4).close()"]
ENTRYPOINT ["celery-exporter"]
