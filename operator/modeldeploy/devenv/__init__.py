"""Local development environment: a kwokctl cluster and a Prometheus, both on 127.0.0.1.

Used by the test fixtures and by `make demo`; binaries come from `hack/testenv.sh`.
"""
