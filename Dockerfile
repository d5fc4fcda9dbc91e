# One image for the three services: `metallica serve protools|generator|mailer`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev && useradd --create-home metallica && mkdir -p /var/mail/metallica \
    && chown metallica /var/mail/metallica
ENV PATH="/app/.venv/bin:$PATH"
USER metallica
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=2s --retries=10 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["metallica"]
CMD ["--help"]
