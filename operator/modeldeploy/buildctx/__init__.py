"""`modeldeploy build`: a model file (or MLflow model directory) and its training data ->
a build context for the model image (plan.py decides, context.py writes)."""
