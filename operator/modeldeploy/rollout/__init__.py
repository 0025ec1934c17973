"""The rollout state machine: pure decisions over plain data.

    plan(subject, world, analysis, now) -> Plan

`subject` is the ModelDeployment (spec + status + annotations), `world` the observed owned
objects (`observe(uid, raw objects)`), `analysis` the optional analysis signal; the Plan
holds the objects to apply and delete, the new status and the Events to post.
"""

from modeldeploy.rollout.machine import plan, refuse_privileges, refuse_without_proxy
from modeldeploy.rollout.plan import Event, NewObject, ObjectRef, Plan, Subject
from modeldeploy.rollout.signal import NO_ANALYSIS, AnalysisInput, AnalysisSignal
from modeldeploy.rollout.world import ObservedDeployment, World, observe

__all__ = [
    "NO_ANALYSIS",
    "AnalysisInput",
    "AnalysisSignal",
    "Event",
    "NewObject",
    "ObjectRef",
    "ObservedDeployment",
    "Plan",
    "Subject",
    "World",
    "observe",
    "plan",
    "refuse_privileges",
    "refuse_without_proxy",
]
