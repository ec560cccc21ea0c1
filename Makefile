# Quick start: `make demo` runs the pipeline on a generated sample; `make test` runs the tests.
# Both set themselves up (uv, .venv from uv.lock, Java check) via scripts/bootstrap.sh.
.PHONY: setup demo test test-fast lint bench bench-10m bench-dp bench-ingest clean

VENV := .venv/bin
BENCH_ARGS ?=

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@$(VENV)/crmshield demo

test: setup
	@$(VENV)/ruff check --quiet .
	@$(VENV)/ruff check --quiet --select AIR3 dags/
	@$(VENV)/ruff format --check --quiet .
	@bash scripts/ensure_chromium.sh
	@$(VENV)/python -m pytest

test-fast: setup
	@$(VENV)/python -m pytest -m "not integration and not e2e"

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff check --select AIR3 dags/
	$(VENV)/ruff format --check .

# Privacy-stage benchmark: Spark job (warm) vs a DuckDB reference on the same files; prints figures, asserts nothing.
# e.g. make bench BENCH_ARGS="--contacts 100000 --reuse"
bench: setup
	$(VENV)/python -m crmshield.bench $(BENCH_ARGS)

bench-10m: setup
	$(VENV)/python -m crmshield.bench --contacts 10000000 $(BENCH_ARGS)

# DP engine benchmark, one process, 1M rows: plain DuckDB vs SmartNoise on DuckDB vs SmartNoise's pandas engine.
bench-dp: setup
	$(VENV)/python -m crmshield.dp_bench $(BENCH_ARGS)

# Ingest benchmark, 1M contacts: crmshield.ingest vs DuckDB's own read_csv -> Parquet on the same export.
# Constant memory at 2 GB: make bench-ingest BENCH_ARGS="--memory --gb 2 --reuse"
bench-ingest: setup
	$(VENV)/python -m crmshield.ingest_bench $(BENCH_ARGS)

clean:
	rm -rf data .airflow dbt_project/target dbt_project/logs spark-warehouse
