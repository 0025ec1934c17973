"""Plain result type of one Prometheus query, shared by the provider and the checks.

A query either answers (`ok`, with values keyed by the label values it was grouped by), or
it does not, for a reason the analysis must tell apart: Prometheus could not be asked
(`unreachable`), refused the query (`bad_query`), or had no series (`no_data`). None of the
three is ever a pass.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

LabelValues = tuple[str, ...]  # label values in the order of the query's `by` labels


class QueryStatus(StrEnum):
    OK = "ok"
    NO_DATA = "no_data"
    UNREACHABLE = "unreachable"
    BAD_QUERY = "bad_query"


@dataclass(frozen=True)
class QueryResult:
    status: QueryStatus
    values: Mapping[LabelValues, float] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is QueryStatus.OK

    @classmethod
    def of(cls, values: Mapping[LabelValues, float]) -> "QueryResult":
        """An answer; an empty one is `no_data`."""
        if not values:
            return cls(QueryStatus.NO_DATA, {}, "the query returned no series")
        return cls(QueryStatus.OK, dict(values))

    @classmethod
    def failed(cls, status: QueryStatus, error: str) -> "QueryResult":
        return cls(status, {}, error)

    def describe(self) -> str:
        """Why there is no answer, for a check's reason (empty when ok)."""
        if self.ok:
            return ""
        return (
            f"{self.status.value.replace('_', ' ')}: {self.error}"
            if self.error
            else (self.status.value.replace("_", " "))
        )
