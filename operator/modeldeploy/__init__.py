"""modeldeploy: ship machine-learning models to Kubernetes safely."""

__version__ = "0.1.0"
