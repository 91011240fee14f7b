# pharmref API server. Build: docker build -t pharmref .
# Run:   docker run -e PHARMREF_DATABASE_URL=postgresql://... -p 8000:8000 pharmref
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PHARMREF_DATA_DIR=/var/lib/pharmref

RUN useradd --system --create-home --home-dir /home/pharmref --uid 10001 pharmref \
    && mkdir -p /var/lib/pharmref && chown pharmref /var/lib/pharmref

WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY app ./app
COPY alembic ./alembic
RUN pip install .

USER pharmref
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["pharmref", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
