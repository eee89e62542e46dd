# The event router (wsm-router): the platform's event delivery, emulated; it needs the whole package (wsm + infra).
# Built from the repository root:  docker build -f infra/deploy/docker/router.Dockerfile .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt requirements-router.txt ./
RUN pip install --no-cache-dir -r requirements-router.txt
COPY pyproject.toml README.md ./
COPY wsm/ ./wsm/
COPY infra/ ./infra/
RUN pip install --no-cache-dir --no-deps .

RUN useradd --system --no-create-home wsm
USER wsm
CMD ["wsm-router"]
