"""Training-data profiles: what a model's inputs and outputs looked like when it was trained.

`schema` is the profile.json document (read by the serving runtime too, so it imports only
pydantic); `stats` holds the pure computations; `build` assembles a profile; `io` reads
training tables and writes the document.
"""
