"""The operator's bookkeeping, as a mutable working copy of the status fields it lives in.

Everything the machine must remember between reconciles (and across operator restarts) is
in `status`: which revision is stable / canary / previous / failed, the step and when it
began, the bake deadline. Whether a promotion is under way is remembered by phase Promoting,
or, while the kill switch freezes it, by the Progressing condition's reason.
"""

from dataclasses import dataclass, field
from datetime import datetime

from modeldeploy.api import (
    AnalysisResult,
    GateAnswer,
    HistoryEntry,
    ModelDeploymentStatus,
)

PROMOTING_REASON = "Promoting"


@dataclass
class State:
    stable: str | None = None
    canary: str | None = None
    previous: str | None = None
    failed: str | None = None
    step: int | None = None
    cohort: str | None = None
    """The cohort the canary serves alone (the cohort phase: step None), in words."""
    step_started_at: datetime | None = None
    bake_until: datetime | None = None
    promoting: bool = False
    last_analysis: AnalysisResult | None = None
    failed_analysis: AnalysisResult | None = None
    consecutive_failures: int = 0
    no_data_since: datetime | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    gates: list[GateAnswer] = field(default_factory=list)

    @classmethod
    def of(cls, status: ModelDeploymentStatus) -> "State":
        progressing = next((c for c in status.conditions if c.type == "Progressing"), None)
        promoting = status.canary_revision is not None and (
            status.phase == "Promoting"
            or (progressing is not None and progressing.reason == PROMOTING_REASON)
        )
        return cls(
            stable=status.stable_revision,
            canary=status.canary_revision,
            previous=status.previous_stable_revision,
            failed=status.failed_revision,
            step=status.step,
            cohort=status.cohort,
            step_started_at=status.step_started_at,
            bake_until=status.bake_until,
            promoting=promoting,
            last_analysis=status.last_analysis,
            failed_analysis=status.failed_analysis,
            consecutive_failures=status.consecutive_failures,
            no_data_since=status.no_data_since,
            history=list(status.history),
            gates=list(status.gates),
        )

    @property
    def shadowing(self) -> bool:
        """In the shadow phase: a canary before its cohort phase and its first step."""
        return self.canary is not None and self.step is None and self.cohort is None

    def end_rollout(self) -> None:
        self.canary = None
        self.step = None
        self.cohort = None
        self.step_started_at = None
        self.promoting = False
