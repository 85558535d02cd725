# The few targets a newcomer needs. Everything runs inside .venv, created on first use.
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/robot_dataset.json

.PHONY: setup quickstart test test-unit lint format data bench clean

setup:  ## create .venv with the CPU or CUDA build of torch, the whole stack and the tests' packages
	@bash scripts/setup.sh

quickstart:  ## the main job on the bundled model and data (.venv without the tests' packages if new)
	@EXTRAS= bash scripts/setup.sh
	@bash scripts/quickstart.sh

test: setup  ## lint, then every test tier (unit, integration on CPU; GPU tests skip without CUDA)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-unit: setup  ## the fast, pure tests only
	$(BIN)/python -m pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

data: setup  ## regenerate the shipped dataset
	$(BIN)/robolora data generate --num-examples 8000 --seed 0 --output $(DATA) --force

bench: setup  ## side-by-side performance measurements (benchmarks/README.md)
	$(BIN)/python benchmarks/throughput.py --steps 24 --warmup 6 --json-out benchmarks/results/throughput.json
	$(BIN)/python benchmarks/scaling.py --steps 12 --warmup 4 --json-out benchmarks/results/scaling.json
	$(BIN)/python benchmarks/padding.py --steps 12 --warmup 4 --json-out benchmarks/results/padding.json
	$(BIN)/python benchmarks/startup.py --json-out benchmarks/results/startup.json
	$(BIN)/python benchmarks/memory.py --steps 2 --json-out benchmarks/results/memory.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
