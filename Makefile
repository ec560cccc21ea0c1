# Quick start: `make demo` runs the pipeline on a generated sample; `make test` runs the tests.
# Both set themselves up (uv, .venv from uv.lock, Java check) via scripts/bootstrap.sh.
.PHONY: setup demo test test-fast lint clean

VENV := .venv/bin

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@$(VENV)/crmshield demo

test: setup
	@$(VENV)/ruff check --quiet .
	@$(VENV)/ruff check --quiet --select AIR3 dags/
	@$(VENV)/ruff format --check --quiet .
	@$(VENV)/python -m pytest

test-fast: setup
	@$(VENV)/python -m pytest -m "not integration and not e2e"

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff check --select AIR3 dags/
	$(VENV)/ruff format --check .

clean:
	rm -rf data .airflow dbt_project/target dbt_project/logs spark-warehouse
