# Déclic: one image for the API, the workers, beat and migrations (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin declic

# Run the code from /app so the flow catalogue and templates sit beside it (settings find
# them relative to the package); the install above provides the dependencies and `declic`.
ENV PYTHONPATH=/app \
    DECLIC_LOG_FORMAT=json

USER declic
ENTRYPOINT ["declic"]
CMD ["--help"]
