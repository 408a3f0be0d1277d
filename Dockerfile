# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN useradd --create-home --uid 10001 hub
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs settings to import; these throwaway values never reach a running container.
RUN SECRET_KEY=build ALLOWED_HOSTS=build DATABASE_URL=postgres://build@build/build REDIS_URL=redis://build \
    TOKEN_ENCRYPTION_KEYS=ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleWZha2U= \
    python manage.py collectstatic --no-input -v 0

# CSV files uploaded for a run; a volume shared by web (which saves them) and worker (which reads them).
RUN mkdir -p /app/var/uploads && chown hub /app/var/uploads
USER hub
EXPOSE 8000
CMD ["gunicorn", "integration_hub.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
