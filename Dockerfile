# One image for the three services: `metallica serve protools|generator|mailer`.
# BASE_IMAGE: the official image by default; scripts/compose-images names a stand-in built from
# Debian's packages where Docker Hub can't be reached (see README, "With Docker Compose").
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_NO_CACHE=1
# The build machine's own CA additions, if it has any (a TLS-intercepting proxy's, a company's):
# Compose passes them as the build secret extra_ca_certs, a PEM bundle (EXTRA_CA_CERTS names the
# file; without it there is no secret and this step does nothing). Each certificate becomes a file
# of its own for update-ca-certificates. A secret, not the build context: the context stays the
# allowlist in .dockerignore.
RUN --mount=type=secret,id=extra_ca_certs \
    if [ -s /run/secrets/extra_ca_certs ]; then \
        awk '/-----BEGIN CERTIFICATE-----/ { n++ } n { print > ("/usr/local/share/ca-certificates/build-extra-" n ".crt") }' \
            /run/secrets/extra_ca_certs \
        && update-ca-certificates; \
    fi
# pip and uv read the system's bundle (they carry their own otherwise), during the build only.
ARG SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# The uv that wrote uv.lock.
RUN pip install --no-cache-dir uv==0.13.9 \
    && useradd --create-home metallica && mkdir -p /var/mail/metallica \
    && chown metallica /var/mail/metallica
WORKDIR /app
# The dependencies in their own layer: rebuilt only when the lock file changes, not on every
# change to the code.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
# Then the project itself (hatchling reads README.md for the package's metadata).
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
USER metallica
EXPOSE 8000
# Readiness, not liveness: /readyz answers 200 only when the database answers with this code's
# schema applied (and, on protools, when the relay's loops run). /healthz stays the liveness probe.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=10 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
ENTRYPOINT ["metallica"]
CMD ["--help"]
