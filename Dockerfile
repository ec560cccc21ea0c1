# crmshield: the pipeline image (Airflow 3 + Spark + dbt/DuckDB + GX + SmartNoise), built from uv.lock.
FROM python:3.11-slim-bookworm

# Spark needs a JVM (17+)
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/crmshield
ENV UV_LINK_MODE=copy \
    CRMSHIELD_HOME=/opt/crmshield \
    CRMSHIELD_DATA_DIR=/data \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/crmshield/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PATH=/opt/crmshield/.venv/bin:$PATH

# locked dependencies first (cached layer), then the project
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev
COPY . .
RUN uv sync --frozen --no-dev \
 && useradd --create-home --uid 10001 crmshield \
 && mkdir -p /data /opt/airflow && chown -R crmshield /data /opt/airflow
USER crmshield
CMD ["airflow", "standalone"]
