"""Serving runtime for model images: V2 inference REST, the metrics contract, warm-up.

Model images install only `modeldeploy[serve,sklearn]`: nothing here imports the operator's
libraries. Importing this package is cheap; the server lives in `server`, the metrics
instrumentation any Python server can reuse in `monitor`.
"""
