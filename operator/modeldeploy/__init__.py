"""modeldeploy: ship machine-learning models to Kubernetes safely."""

__version__ = "0.1.0"  # the only place it is written: the wheel's metadata reads it
