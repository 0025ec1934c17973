"""The churn model as an MLServer image's contents: an external V2 server (spec.externalServer)
behind the operator's `modeldeploy proxy`.

    python examples/churn/build_mlserver.py OUT [--variant healthy|skewed] [--version V]

writes (OUT stands for the image's root: an MLServer image would hold these paths)
    OUT/model/        model-settings.json (mlserver_sklearn), model.joblib   <- MLServer serves
    OUT/modeldeploy/  profile.json (schema, bins, golden requests)           <- the proxy's,
                                                                                copied out by
                                                                                the pod's init
                                                                                container
    OUT/data/         train.csv, holdout.csv                                 <- client traffic

MLServer runs no preprocessing of ours: it serves the joblib pipeline on the columns as sent
(the healthy model's preprocessing only canonicalises category spellings, which the data
already has). `skewed` is training/serving skew the proxy sees on its inputs: the training
table recorded monthly charges in cents, so model and profile expect 100x what clients
send; the golden requests (training rows) still pass, the canary's feature drift does not.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402  (the churn example's training and profile)

PROFILE_DIR = "modeldeploy"  # /modeldeploy/profile.json: spec.externalServer.profilePath's default
SKLEARN_RUNTIME = "mlserver_sklearn.SKLearnModel"
VARIANTS = ("healthy", "skewed")


def build_mlserver(out: Path, variant: str = "healthy", version: str = "1") -> Path:
    """Writes OUT/model, OUT/modeldeploy and OUT/data; returns OUT."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        model_dir = build.build(Path(tmp), "healthy", version, charges_in_cents=variant == "skewed")
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / PROFILE_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(model_dir / "model.joblib", out / "model" / "model.joblib")
        shutil.copy(model_dir / "profile.json", out / PROFILE_DIR / "profile.json")
        shutil.copytree(Path(tmp) / "data", out / "data", dirs_exist_ok=True)
    settings = {
        "name": build.MODEL_NAME,
        "implementation": SKLEARN_RUNTIME,
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (out / "model" / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="healthy")
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    print(f"image contents: {build_mlserver(args.out, args.variant, args.version)}")


if __name__ == "__main__":
    main()
