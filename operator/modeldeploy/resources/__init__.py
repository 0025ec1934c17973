"""Pure builders: a ModelDeployment's spec -> the Kubernetes objects that serve it.

Plain dicts in, plain dicts out, no I/O: `rollout` decides *which* objects should exist and
with which track, replicas and selectors; these functions only know how each one looks.
"""
