"""What `modeldeploy build` writes, decided from plain data (pure): the framework of a model
file or MLflow directory, the runtime extras and pinned libraries its image needs, its
model.yaml, the Containerfile, and whether the profile's checks refuse the training set.

A build context is

    Containerfile         the shape of examples/churn/Containerfile: BASE_IMAGE argument, a
                          build stage making /opt/modeldeploy with modeldeploy[serve,FORMAT]
                          only, the model directory at /model, `modeldeploy serve` as entrypoint
    model/model.yaml      name, version, framework, artifact (and classes)
    model/profile.json    the profile, golden requests included (profiling/)
    model/ARTIFACT        the model file or MLflow model directory, as given
    wheels/               the modeldeploy wheel, when one is bundled (else from the index)
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.profile_schema import Profile
from modeldeploy.serving.formats.mlflow import TELEMETRY_ENV

MODEL_DIR = "model"
WHEELS_DIR = "wheels"
CONTAINERFILE = "Containerfile"
REFUSED_EXIT_CODE = 3  # as `modeldeploy profile --refuse-leaky`; 2: bad input
# Model files by suffix (`--framework auto`); an MLflow model is a directory with MLmodel.
SUFFIXES = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".onnx": "onnx",
}
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "onnx", "mlflow")
# The libraries each format's extra brings, pinned in the image to the versions that built
# the profile: the golden requests were answered by them.
LIBRARIES = {
    "sklearn": ("scikit-learn", "joblib"),
    "xgboost": ("xgboost-cpu", "pandas"),
    "lightgbm": ("lightgbm",),
    "onnx": ("onnxruntime",),
    "mlflow": ("mlflow-skinny", "pandas"),
}
COMMON_LIBRARIES = ("numpy",)
# An MLflow model's pyfunc loader -> the extra that brings its flavor's library.
MLFLOW_FLAVORS = {
    "mlflow.sklearn": "sklearn",
    "mlflow.xgboost": "xgboost",
    "mlflow.lightgbm": "lightgbm",
}


class BadBuildInput(ValueError):
    """The model or the options cannot make a build context (exit 2)."""


class BuildRefused(ValueError):
    """The profile's checks refuse the training set (exit 3); nothing is written."""


@dataclass(frozen=True)
class ModelSource:
    """What was found at the MODEL path."""

    name: str  # its file or directory name
    is_directory: bool
    mlmodel: Mapping[str, Any] | None = None  # an MLflow directory's MLmodel document


@dataclass(frozen=True)
class BuildRequest:
    name: str
    version: str
    modeldeploy_version: str
    framework: str = "auto"
    classes: tuple[str, ...] | None = None
    wheel: str | None = None  # the bundled wheel's file name; None: from the package index


@dataclass(frozen=True)
class ModelPlan:
    framework: str
    artifact: str  # its name under model/
    extras: tuple[str, ...]  # modeldeploy's, "serve" first
    libraries: tuple[str, ...]  # distributions pinned in the image
    model_yaml: dict[str, Any]


def detect_framework(source: ModelSource) -> str:
    if source.is_directory:
        if source.mlmodel is None:
            raise BadBuildInput(
                f"{source.name} is a directory without an MLmodel file: only MLflow model "
                "directories are built from a directory"
            )
        return "mlflow"
    suffix = "." + source.name.rsplit(".", 1)[-1].lower() if "." in source.name else ""
    framework = SUFFIXES.get(suffix)
    if framework is None:
        known = ", ".join(f"{s} ({f})" for s, f in SUFFIXES.items())
        raise BadBuildInput(
            f"cannot tell the framework of {source.name} from its name ({known}, or an MLflow "
            "directory): give --framework"
        )
    return framework


def mlflow_extras(mlmodel: Mapping[str, Any]) -> tuple[str, ...]:
    """The extra that brings an MLflow model's flavor library (sklearn for mlflow.sklearn)."""
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function")
    if not isinstance(pyfunc, Mapping):
        raise BadBuildInput("the MLflow model has no python_function flavor: it cannot serve")
    loader = str(pyfunc.get("loader_module"))
    extra = MLFLOW_FLAVORS.get(loader)
    if extra is None:
        raise BadBuildInput(
            f"the MLflow model's pyfunc loader is {loader}, whose libraries modeldeploy build "
            f"does not know: it builds {', '.join(MLFLOW_FLAVORS)} models"
        )
    return (extra,)


def plan_model(source: ModelSource, request: BuildRequest) -> ModelPlan:
    framework = request.framework
    if framework == "auto":
        framework = detect_framework(source)
    if framework not in FRAMEWORKS:
        raise BadBuildInput(f"framework {framework}: choose auto or {', '.join(FRAMEWORKS)}")
    if (framework == "mlflow") != source.is_directory:
        raise BadBuildInput(
            f"framework {framework} takes "
            + ("an MLflow model directory" if framework == "mlflow" else "a model file")
            + f", and {source.name} is "
            + ("a directory" if source.is_directory else "a file")
        )
    extras = [framework]
    if framework == "mlflow":
        assert source.mlmodel is not None  # detect_framework and the check above
        extras += mlflow_extras(source.mlmodel)
    if request.classes is not None and framework == "sklearn":
        raise BadBuildInput("--classes is for format models: a scikit-learn estimator has its own")
    libraries = [*COMMON_LIBRARIES]
    for extra in extras:
        libraries += [name for name in LIBRARIES[extra] if name not in libraries]
    model_yaml: dict[str, Any] = {
        "name": request.name,
        "version": request.version,
        "framework": framework,
        "artifact": source.name,
    }
    if request.classes is not None:
        model_yaml["classes"] = list(request.classes)
    return ModelPlan(framework, source.name, ("serve", *extras), tuple(libraries), model_yaml)


def refusal(profile: Profile) -> str | None:
    """Why the profile's checks refuse the training set (its leakage flags), else None."""
    if not profile.leakage:
        return None
    reasons = "\n".join(f"  leakage: {flag.reason}" for flag in profile.leakage)
    features = ", ".join(dict.fromkeys(flag.feature for flag in profile.leakage))
    return f"refusing training data whose feature(s) leak the label: {features}\n{reasons}"


def requirements(plan: ModelPlan, request: BuildRequest, versions: Mapping[str, str]) -> list[str]:
    """What pip installs: modeldeploy with the plan's extras (the bundled wheel, else the
    index's release), and every library of the plan at the version that built the profile."""
    extras = ",".join(plan.extras)
    runtime = (
        f"/{WHEELS_DIR}/{request.wheel}[{extras}]"
        if request.wheel is not None
        else f"modeldeploy[{extras}]=={request.modeldeploy_version}"
    )
    return [runtime, *(f"{name}=={versions[name]}" for name in plan.libraries if name in versions)]


def containerfile(plan: ModelPlan, request: BuildRequest, versions: Mapping[str, str]) -> str:
    quoted = " \\\n      ".join(f'"{r}"' for r in requirements(plan, request, versions))
    wheels = f"COPY {WHEELS_DIR} /{WHEELS_DIR}\n" if request.wheel is not None else ""
    env = "ENV PATH=/opt/modeldeploy/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\\n"
    if plan.framework == "mlflow":
        env += f"    {TELEMETRY_ENV}=true \\\n"
    env += "    MODELDEPLOY_HOST=0.0.0.0 MODELDEPLOY_PORT=8080\n"
    title = f"{request.name} model {request.version} ({plan.framework})"
    return f"""\
# Written by `modeldeploy build` (modeldeploy {request.modeldeploy_version}): model + training
# profile + runtime, one image. From this directory:
#   buildah bud -f Containerfile -t {request.name}:{request.version} .
# An extra CA bundle for pip may be given as the build secret `ca-bundle`.
ARG BASE_IMAGE=python:3.11-slim

FROM ${{BASE_IMAGE}} AS build
{wheels}# modeldeploy[{",".join(plan.extras)}] only, and the libraries that built the profile.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca-bundle \\
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \\
 && python3 -m venv /opt/modeldeploy \\
 && /opt/modeldeploy/bin/pip install --disable-pip-version-check -q --no-compile \\
      {quoted} \\
 && /opt/modeldeploy/bin/pip uninstall -y -q pip \\
 && /opt/modeldeploy/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \\
      /opt/modeldeploy/lib

FROM ${{BASE_IMAGE}}
COPY --from=build /opt/modeldeploy /opt/modeldeploy
COPY {MODEL_DIR} /model
LABEL org.opencontainers.image.title="{title}" \\
      io.modeldeploy.model.name="{request.name}" \\
      io.modeldeploy.model.version="{request.version}"
{env}USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["modeldeploy", "serve", "--model-dir", "/model"]
"""


def context_files(
    plan: ModelPlan,
    request: BuildRequest,
    profile: Profile,
    versions: Mapping[str, str],
) -> dict[str, str]:
    """The generated files of the context (relative path -> text) besides the artifact,
    the profile and the wheel, which are copied; BuildRefused when the checks refuse."""
    refused = refusal(profile)
    if refused is not None:
        raise BuildRefused(refused)
    return {CONTAINERFILE: containerfile(plan, request, versions)}


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """`--classes a,b`: labels in the order of the model's probabilities."""
    if text is None:
        return None
    classes = tuple(c.strip() for c in text.split(","))
    if len(classes) < 2 or not all(classes) or len(set(classes)) != len(classes):
        raise BadBuildInput(f"--classes {text!r}: at least two distinct, comma-separated labels")
    return classes
