FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 10001 tollgate
USER tollgate

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8080"]
