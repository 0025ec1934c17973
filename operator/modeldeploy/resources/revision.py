"""What a revision is: image + model + pod template (+ the external server and the proxy
image beside it), and its short stable hash.

Everything else in the spec (replicas, rollout, analysis, warm-up latency...) can change
without a new revision; a change of any of these is rolled out as a canary. The proxy image
is the operator's setting, not the spec's, yet it serves every request of such a pod: a new
proxy image is a new revision, rolled out and analysed like a new model image.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import ApiModel, ExternalServer, ModelDeploymentSpec, ModelRef, PodTemplate

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
    external: ExternalServer | None = None
    proxy_image: str | None = None
    """The `modeldeploy proxy` image beside an external server (None without one)."""

    @classmethod
    def of(cls, spec: ModelDeploymentSpec, proxy_image: str | None = None) -> "RevisionSource":
        """`proxy_image`: the operator's; kept only when the spec has an external server."""
        external = spec.external_server
        return cls(
            image=spec.image,
            model=spec.model,
            template=spec.template,
            external=external,
            proxy_image=proxy_image if external is not None else None,
        )

    def wire(self) -> dict[str, Any]:
        """Defaults left out, so that a new defaulted API field never changes a revision
        (and a spec without an external server hashes as it did before there was one)."""
        wire: dict[str, Any] = {
            "image": self.image,
            "model": self.model.model_dump(mode="json", by_alias=True),
            "template": _without_defaults(self.template),
        }
        if self.external is not None:
            wire["externalServer"] = _without_defaults(self.external)
            wire["proxyImage"] = self.proxy_image
        return wire

    def canonical(self) -> str:
        return canonical_json(self.wire())

    @classmethod
    def parse(cls, text: str) -> "RevisionSource":
        """Inverse of `canonical`; ValueError (pydantic's included) on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise ValueError("not a revision source")
        external = data.get("externalServer")
        proxy_image = data.get("proxyImage")
        if external is not None and not isinstance(proxy_image, str):
            raise ValueError("an external server's revision source names no proxy image")
        return cls(
            image=data["image"],
            model=ModelRef.model_validate(data.get("model")),
            template=PodTemplate.model_validate(data.get("template") or {}),
            external=ExternalServer.model_validate(external) if external is not None else None,
            proxy_image=proxy_image if external is not None else None,
        )

    @property
    def revision(self) -> str:
        return short_hash(self.wire())


def _without_defaults(model: ApiModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


def revision_of(spec: ModelDeploymentSpec, proxy_image: str | None = None) -> str:
    return RevisionSource.of(spec, proxy_image).revision
