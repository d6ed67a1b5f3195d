# quarantine-mirror's container image: `docker build -t quarantine-mirror .`
#
# Stage 1 builds the project's wheel and the wheels of its dependencies; the final stage
# installs them into a venv with no compiler, no pip cache and no source tree, and runs
# `mirror serve` as an unprivileged user. The cache (MIRROR_DATA_DIR) and the state
# (MIRROR_STATE_DIR: rules, pins, audit when there is no Redis) are volumes; the root
# filesystem can be mounted read-only (then give /tmp a tmpfs).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mirror/ ./mirror/
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/quarantine-mirror/bin:$PATH \
    MIRROR_CONFIG=/etc/quarantine-mirror/mirror.toml \
    MIRROR_LISTEN=0.0.0.0:8080 \
    MIRROR_DATA_DIR=/var/cache/quarantine-mirror \
    MIRROR_STATE_DIR=/var/lib/quarantine-mirror
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/quarantine-mirror \
    && python -m pip --python /opt/quarantine-mirror/bin/python install \
        --no-index --find-links /wheels --no-cache-dir --disable-pip-version-check \
        quarantine-mirror \
    && groupadd --system --gid 10001 mirror \
    && useradd --system --uid 10001 --gid mirror --no-create-home \
        --home-dir /var/lib/quarantine-mirror --shell /usr/sbin/nologin mirror \
    && mkdir -p /var/cache/quarantine-mirror /var/lib/quarantine-mirror /etc/quarantine-mirror \
    && chown mirror:mirror /var/cache/quarantine-mirror /var/lib/quarantine-mirror
COPY config/mirror.toml /etc/quarantine-mirror/mirror.toml
VOLUME ["/var/cache/quarantine-mirror", "/var/lib/quarantine-mirror"]
WORKDIR /var/lib/quarantine-mirror
USER 10001:10001
EXPOSE 8080
# SIGTERM: the supervisor stops accepting, lets in-flight requests finish within
# shutdown_grace, then exits (give `docker stop -t` more than shutdown_grace).
STOPSIGNAL SIGTERM
# Liveness with the image's own Python (no curl in a slim image); HTTPS when MIRROR_TLS_CERT
# is set (the certificate names the service, not 127.0.0.1: not verified here).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('MIRROR_TLS_CERT')); port = os.environ.get('MIRROR_LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(('https' if tls else 'http') + f'://127.0.0.1:{port}/healthz', timeout=4, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["mirror"]
CMD ["serve"]
