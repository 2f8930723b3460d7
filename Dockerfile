# syntax=docker/dockerfile:1
# modelyard itself: one image for every verb (serve, score, stream, train, check, promote, ...).
# Build: docker build -t modelyard:0.1.0 .
# Serve: docker run --rm -p 8000:8000 -e MODELYARD_DATABASE_URL=postgresql://... modelyard:0.1.0
# Train: docker run --rm -v "$PWD:/work" -e MODELYARD_DATABASE_URL=... modelyard:0.1.0 train spec.toml
# For one model with its exact package versions, use `modelyard deploy docker NAME` instead (docs/deploy.md).

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="modelyard" \
      org.opencontainers.image.description="Train, publish, serve and watch scikit-learn models." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 modelyard \
 && useradd --system --uid 10001 --gid modelyard --home-dir /home/modelyard --create-home \
      --shell /usr/sbin/nologin modelyard \
 && mkdir -p /var/lib/modelyard /var/cache/modelyard /work \
 && chown modelyard:modelyard /var/lib/modelyard /var/cache/modelyard /work
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELYARD_HOME=/var/lib/modelyard \
    MODELYARD_CACHE_DIR=/var/cache/modelyard
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /work
EXPOSE 8000
# uvicorn stops gracefully on SIGTERM: in-flight requests finish, the prediction log is flushed.
STOPSIGNAL SIGTERM
# Meaningful for `serve` (the default command); batch and stream runs have no HTTP port to probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["modelyard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
