# The two commands a person needs: `make demo` and `make test` (see README.md).
SHELL := /usr/bin/env bash
VENV = $(shell hack/pyenv.sh path)
WITH_TOOLS = eval "$$(hack/testenv.sh env)" && PATH="$(VENV)/bin:$$PATH"

.PHONY: setup images test demo down lint crd

setup:  ## build/install the cluster components, the Python env and MLServer's (cached, idempotent)
	hack/testenv.sh install
	hack/pyenv.sh
	hack/mlserver-env.sh

images: setup  ## base, operator and example model images, built offline, pushed by digest to the local registry
	$(WITH_TOOLS) modeldeploy dev images

test: setup images  ## the whole suite: lint, types, unit and integration tests
	hack/run-tests.sh

demo: setup  ## local cluster + Prometheus + operator + real model servers: a rollback and a promotion (CONTAINERS=1: the real images, in podman; GATEWAY=1: traffic through an HTTPRoute, traffic.mode gatewayAPI)
	$(WITH_TOOLS) modeldeploy dev demo $(if $(CONTAINERS),--containers) $(if $(GATEWAY),--gateway-api)

down:  ## tear the demo cluster down
	$(WITH_TOOLS) modeldeploy dev down

lint: setup
	$(WITH_TOOLS) ruff check . && ruff format --check . && mypy
