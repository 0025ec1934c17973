"""What a revision is: image + model + pod template, and its short stable hash.

Everything else in the spec (replicas, rollout, analysis, warm-up latency...) can change
without a new revision; a change of any of these three is rolled out as a canary.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import ModelDeploymentSpec, ModelRef, PodTemplate

REVISION_LENGTH = 10


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace (hash input, stored in annotations)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def short_hash(value: Any, length: int = REVISION_LENGTH) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RevisionSource:
    """The part of a spec that defines a revision."""

    image: str
    model: ModelRef
    template: PodTemplate

    @classmethod
    def of(cls, spec: ModelDeploymentSpec) -> "RevisionSource":
        return cls(image=spec.image, model=spec.model, template=spec.template)

    def wire(self) -> dict[str, Any]:
        """Defaults left out, so that a new defaulted API field never changes a revision."""
        return {
            "image": self.image,
            "model": self.model.model_dump(mode="json", by_alias=True),
            "template": self.template.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
            ),
        }

    def canonical(self) -> str:
        return canonical_json(self.wire())

    @classmethod
    def parse(cls, text: str) -> "RevisionSource":
        """Inverse of `canonical`; ValueError (pydantic's included) on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise ValueError("not a revision source")
        return cls(
            image=data["image"],
            model=ModelRef.model_validate(data.get("model")),
            template=PodTemplate.model_validate(data.get("template") or {}),
        )

    @property
    def revision(self) -> str:
        return short_hash(self.wire())


def revision_of(spec: ModelDeploymentSpec) -> str:
    return RevisionSource.of(spec).revision
