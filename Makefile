# dproxy — run `make` for the list of targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= uv
APT_PACKAGES := docker-registry skopeo podman containerd chromium redis-server postgresql curl
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## Install what the tests need (uv; Debian docker-registry, skopeo, podman, containerd, chromium, redis, postgresql, curl)
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: sync
sync: ## Install the Python workspace (.venv) from the lock file
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen

.PHONY: run
run: sync ## Start dproxy on the embedded default (SQLite, local files) at DPROXY_LISTEN
	$(UV) run dproxy serve

.PHONY: lint
lint: sync ## ruff and mypy (strict)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

.PHONY: fmt
fmt: sync ## Format and autofix
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

.PHONY: test
test: tools sync lint ## Install what is needed, lint, and run every test
	$(UV) run pytest -q $(PYTEST_ARGS)

.PHONY: bench
bench: tools sync ## Pull benchmark: dproxy vs the CNCF distribution registry in proxy mode
	$(UV) run python -m bench.pull_bench

.PHONY: migrate
migrate: sync ## Apply database migrations to DPROXY_DATABASE_URL
	$(UV) run dproxy migrate

.PHONY: up
up: ## Start the split topology with docker compose (needs a Docker engine)
	docker compose up -d --wait

.PHONY: down
down: ## Stop the compose topology
	docker compose down

.PHONY: k8s-render
k8s-render: sync ## Render the Kubernetes overlays
	$(UV) run kubectl kustomize k8s/overlays/dev
	$(UV) run kubectl kustomize k8s/overlays/prod
