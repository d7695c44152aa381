# syntax=docker/dockerfile:1
# One image for the engine, the operator and (with another command) workers:
#   docker build -t ghcr.io/hewer-dev/hewer:0.1.0 .
#   docker run -e HEWER_DATABASE_URL=postgresql://... -p 7077:7077 -p 8080:8080 IMAGE    # serve
#   docker run IMAGE operator --all-namespaces                                           # operator
#   docker run -p 7077:7077 -p 8080:8080 IMAGE dev                 # embedded PostgreSQL
# Health: Kubernetes probes GET /api/ready and /api/live on port 8080 (manifests/base); the
# image has no HEALTHCHECK because the operator and workers run it without that port.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: install Hewer and its dependencies into a virtualenv -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/hewer
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operator ./operator
RUN /opt/hewer/bin/pip install --no-cache-dir . \
    && /opt/hewer/bin/hewer --help > /dev/null

# --- runtime: the virtualenv, a non-root user, nothing else ------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hewer" \
      org.opencontainers.image.description="Hatchet-compatible durable task engine and operator"
RUN groupadd --system --gid 10001 hewer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hewer \
       --no-create-home --shell /usr/sbin/nologin hewer \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/hewer
# The virtualenv stays owned by root: the process cannot change its own code.
COPY --from=build --chown=root:root /opt/hewer /opt/hewer
ENV PATH=/opt/hewer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/hewer \
    HEWER_DATA_DIR=/var/lib/hewer
WORKDIR /var/lib/hewer
USER 10001:10001
EXPOSE 7077 8080
ENTRYPOINT ["hewer"]
CMD ["serve"]
