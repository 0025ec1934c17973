"""Canary analysis: PromQL for the metrics contract, pure statistics, three-valued verdicts.

Independent of Kubernetes and Kopf: plain data in, plain data out (see `checks` for how the
operator calls it).
"""
