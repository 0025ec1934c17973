"""An external Open Inference Protocol (V2) server as the model image, with the operator's
`modeldeploy proxy` beside it in every pod.

The proxy is what the Services, the probes and Prometheus see: it answers on the pod's `http`
port (`contract.PROXY_PORT`), checks inputs against the image's training profile, replays its
golden requests before the pod turns Ready, exports the metrics contract, and forwards each
request to the server on 127.0.0.1 in the same pod. The profile (and an optional proxy
configuration) is a file in the model image, copied out by init containers of the same
image: one immutable digest still carries model + profile.
"""

from typing import Annotated

from pydantic import Field

from modeldeploy import contract
from modeldeploy.api.base import ApiModel, Rule, pattern_rule
from modeldeploy.api.template import ResourceRequirements

V2_MODEL_NAME_PATTERN = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

V2ModelName = Annotated[
    str,
    Field(min_length=1, max_length=63),
    pattern_rule(
        V2_MODEL_NAME_PATTERN,
        "must be a V2 model name as the server serves it under /v2/models/<name>: at most 63 "
        "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    ),
]

IMAGE_PATH_PATTERN = "^(/[-A-Za-z0-9_.]+)+$"

ImagePath = Annotated[
    str,
    Field(min_length=2, max_length=1024),
    pattern_rule(
        IMAGE_PATH_PATTERN,
        "must be an absolute path of a file in the model image, e.g. "
        "/modeldeploy/profile.json (letters, digits, '-', '_', '.' and '/'; no spaces)",
    ),
    Rule(
        cel="!self.split('/').exists(p, p == '..' || p == '.')",
        message="must not contain '.' or '..' segments (name the file itself)",
        holds=lambda path: not any(part in (".", "..") for part in path.split("/")),
    ),
]


class ExternalServer(ApiModel):
    """The image is a V2 server of its own (MLServer, Triton, TorchServe's V2 mode...), not
    the modeldeploy runtime: the operator runs `modeldeploy proxy` beside it in each pod."""

    rules = (
        Rule(
            cel=f"self.port != {contract.PROXY_PORT}",
            message=f"externalServer.port {contract.PROXY_PORT} is the modeldeploy proxy's "
            "(it carries the pod's http port in the same pod); serve the model on another "
            "port",
            holds=lambda e: e.port != contract.PROXY_PORT,
            field_path=".port",
        ),
        Rule(
            cel="!has(self.configPath) || self.configPath != self.profilePath",
            message="externalServer.configPath and profilePath must be different files",
            holds=lambda e: e.config_path != e.profile_path,
            field_path=".configPath",
        ),
    )

    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """The port the server's V2 REST API listens on inside the pod (the proxy forwards to
    127.0.0.1 on it; the Services never target it)."""
    model_name: V2ModelName | None = None
    """The model's name on the server (/v2/models/<name>/infer); spec.model.name when absent.
    Clients call the proxy with spec.model.name either way."""
    profile_path: ImagePath = "/modeldeploy/profile.json"
    """The training profile (`modeldeploy profile` output: schema, bins, golden requests) in
    the model image; copied out by an init container of the same image."""
    config_path: ImagePath | None = None
    """The proxy's configuration (model.yaml's serving settings) in the model image, if any."""
    proxy_resources: ResourceRequirements = ResourceRequirements()
    """Compute resources of the proxy container (and the init containers that copy the files)."""
