"""The router interface and the split it is given."""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from modeldeploy.api import Cohort

if TYPE_CHECKING:
    from modeldeploy.routing.gateway_api import ObservedRoute, RoutePatch


@dataclass(frozen=True)
class Split:
    """Where the state machine wants traffic, and what the pods can carry right now."""

    name: str
    """The ModelDeployment's name (its Services are `<name>`, `<name>-stable`, `-canary`)."""
    stable: str
    canary: str | None
    percent: int
    """The canary's requested share: the current step's (0 in the shadow phase)."""
    stable_ready: int
    canary_ready: int
    carries: bool
    """The canary has the Ready pods for `percent`: for a share, the pods this router
    sizes for it; for a full step, as many as the stable has (at least minWarm). No router
    sends requests to a canary before."""
    carried: int = 0
    """The largest share up to `percent` the canary's Ready pods carry now: the step's, else
    an earlier step's (while the pods for a larger step warm up), else 0."""
    hold: bool = False
    """The stable alone (a removed revision still has pods, or a wanted object is foreign)."""
    killed: bool = False
    fallback: bool = False
    """The kill switch routes `<name>` to the fallback Deployment."""
    cohort: Cohort | None = None
    """In the cohort phase: the requests the canary serves alone (Gateway API only)."""


class Router(Protocol):
    """One traffic mode."""

    def canary_replicas(self, stable_replicas: int, percent: int, maximum: int) -> int:
        """Canary pods for `percent` of the traffic next to `stable_replicas` stable pods."""
        ...

    def planned_weight(self, stable_replicas: int, percent: int, maximum: int) -> int:
        """The share the canary will get at a step of `percent` once it carries it."""
        ...

    def client_selector(self, split: Split) -> dict[str, str]:
        """The selector of the `<name>` Service."""
        ...

    def route_patch(self, split: Split, route: "ObservedRoute | None") -> "RoutePatch | None":
        """The change to the HTTPRoute's weights that `split` needs (None: nothing to write)."""
        ...

    def effective_weight(self, split: Split, route: "ObservedRoute | None") -> int:
        """Percent of requests the canary gets from what is observed."""
        ...


def load_replicas(stable_replicas: int, percent: int, maximum: int) -> int:
    """Pods for `percent` of the stable's load (mirrored traffic, or a weight the gateway
    sends exactly), at least 1; at 100 as many as the stable has."""
    return max(1, min(math.ceil(max(stable_replicas, 1) * percent / 100), maximum))
