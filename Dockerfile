# One image for the three services: `metallica serve protools|generator|mailer`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_NO_CACHE=1
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
