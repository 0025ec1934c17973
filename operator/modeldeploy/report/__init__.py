"""`modeldeploy report`: one self-contained HTML page on a ModelDeployment's rollout.

- `model`: pure. Which series to ask Prometheus for, and at which instant (`plan`), and the
  report's content from status and the answers (`build`): failing checks first, failing
  features first, a note wherever data is missing.
- `page`: the HTML (plotly charts, plotly.js embedded, so it opens with no network).

The command (`modeldeploy.console.commands`) reads the object, asks Prometheus, writes the file.
"""
