# One image for every service; the command picks the service (python -m restock_<name>).
# The locked dependencies install in a cached layer before the source is copied.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy RESTOCK_HTTP_HOST=0.0.0.0
RUN pip install --no-cache-dir uv
WORKDIR /app

COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/detector/pyproject.toml services/detector/pyproject.toml
COPY services/dispatcher/pyproject.toml services/dispatcher/pyproject.toml
COPY services/sender/pyproject.toml services/sender/pyproject.toml
COPY services/admin-api/pyproject.toml services/admin-api/pyproject.toml
COPY sandbox/pyproject.toml sandbox/pyproject.toml
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace

COPY . .
RUN uv sync --frozen --no-dev --all-packages
ENV PATH="/app/.venv/bin:$PATH"
USER nobody
CMD ["python", "-m", "restock_admin"]
