# Every target sets itself up: a fresh machine needs only python3 and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NPM_STAMP := node_modules/.installed-stamp
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PROTO_FILES := $(wildcard protos/billing/v1/*.proto)
LINT_PATHS = server tests bench $(wildcard clients/tollbooth_client)
GOOGLE_PROTOS := google/api/annotations.proto google/api/http.proto google/api/field_behavior.proto google/api/resource.proto google/rpc/status.proto google/rpc/error_details.proto

.PHONY: setup run migrate test soak lint breaking proto-baseline fmt typecheck proto proto-check third-party bench clean catalog-apply

setup: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## npm packages (Swagger UI for /api/docs, the TypeScript client's generator): exactly the lock.
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $(NPM_STAMP)

## The service: migrate, then gRPC server, webhook sidecar and Envoy in the foreground.
## Not echoed: its output is the stack's log, one JSON object per line (README "Logs").
run: setup
	@$(PY) -m tollbooth.cli run

migrate: setup
	$(PY) -m tollbooth.cli migrate

## The test suite (PostgreSQL tests run when BILLING_TEST_POSTGRES_URL is set), in
## TEST_WORKERS processes (pytest-xdist; one test file stays in one process, so a module's
## shared server is started once). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: setup proto-check
	$(BIN)/pytest -q -rs $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

## The long proofs at full size (race rounds, kill cycles, fuzz examples); same assertions.
soak: setup
	BILLING_SOAK=1 $(BIN)/pytest -q -rs -m soak $(PYTEST_ARGS)

lint: setup third-party breaking
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	cd protos && ../$(BIN)/buf lint

## The contract only grows: buf breaking against the baseline committed when it was settled.
BASELINE := protos/baseline/billing-v1.binpb
breaking: setup third-party
	cd protos && ../$(BIN)/buf breaking --path billing --against ../$(BASELINE)
	@echo "buf breaking: no breaking change against $(BASELINE)"

## Record the current contract as the baseline (only when a contract version is released).
proto-baseline: setup third-party
	mkdir -p $(dir $(BASELINE))
	cd protos && ../$(BIN)/buf build --path billing --exclude-source-info -o ../$(BASELINE)

fmt: setup
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

typecheck: setup
	$(BIN)/mypy server/tollbooth

## Google protos for buf come from the installed googleapis-common-protos (the BSR is unreachable).
third-party: setup
	@for f in $(GOOGLE_PROTOS); do mkdir -p protos/third_party/$$(dirname $$f); \
	  cp -f $(SITE)/$$f protos/third_party/$$f; done

## Regenerate the Python package clients/billing/v1 and Envoy's descriptor set. The descriptor
## set also holds protos/gateway (the health check's REST binding), which nothing generates.
proto: setup third-party
	$(MAKE) --no-print-directory gen-into OUT=.

gen-into:
	rm -f $(OUT)/clients/billing/v1/*_pb2*.py $(OUT)/clients/billing/v1/*_pb2*.pyi
	mkdir -p $(OUT)/clients/billing/v1 $(OUT)/gateway
	$(PY) -m grpc_tools.protoc -I protos -I protos/third_party \
	  --python_out=$(OUT)/clients --grpc_python_out=$(OUT)/clients \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$(OUT)/clients \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(OUT)/clients \
	  $(PROTO_FILES)
	cd protos && ../$(BIN)/buf build -o $(abspath $(OUT))/gateway/billing.binpb
	PYTHONPATH=server:clients $(PY) -m tollbooth.openapi $(OUT)/gateway/billing.binpb $(OUT)/gateway/openapi.json
	rm -rf $(OUT)/clients/ts/src/gen
	$(BIN)/buf generate $(abspath $(OUT))/gateway/billing.binpb --template clients/ts/buf.gen.yaml -o $(OUT) \
	  --exclude-path grpc

## Fails when the committed generated code or descriptor set is stale.
proto-check: setup third-party
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(MAKE) --no-print-directory -s gen-into OUT=$$tmp >/dev/null && \
	cd protos && ../$(BIN)/buf lint && cd .. && \
	for f in $$tmp/clients/billing/v1/*_pb2* $$tmp/gateway/billing.binpb $$tmp/gateway/openapi.json; do \
	  rel=$${f#$$tmp/}; cmp -s $$f $$rel || { echo "stale: $$rel (run make proto)"; exit 1; }; done && \
	for f in clients/billing/v1/*_pb2*; do test -e $$tmp/$$f || { echo "stale: $$f has no proto"; exit 1; }; done && \
	{ diff -r -q $$tmp/clients/ts/src/gen clients/ts/src/gen || { echo "stale: clients/ts/src/gen (run make proto)"; exit 1; }; } && \
	echo "proto-check: generated code and descriptor set are current; buf lint clean"

## Catalog as code: make catalog-apply FILE=catalog.yaml ARGS="--dry-run"
catalog-apply: setup
	$(PY) -m tollbooth.cli catalog apply $(FILE) $(ARGS)

## Throughput benchmarks: every bench module, each printing ratios to a baseline of its run.
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules protos/third_party var .pytest_cache
