"""Training-data profiles: what a model's inputs and outputs looked like when it was trained.

The document itself is `modeldeploy.profile_schema` (read by the serving runtime too);
`stats` holds the pure computations; `build` assembles a profile; `io` reads training tables
and writes the document.
"""
