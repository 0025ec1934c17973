"""Only for `modeldeploy load` in cli.py, which imports it from here: the profile document
is `modeldeploy.profile_schema`. Goes when cli.py imports that instead."""

from modeldeploy.profile_schema import Profile

__all__ = ["Profile"]
