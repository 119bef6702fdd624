"""Access to the infrastructure Gantry changes and watches: AWS through boto3,
Kubernetes through the official client, Terraform and other tools as
streamed processes, alarm sources, and the masking of secrets in what they
print.

Used by the engine's runners (deployments/runners/, which change
environments) and by the observers (environments/alarms.py, costs.py, drift,
which read them); neither imports the other. Nothing here knows Django's
models: callers pass plain values.
"""
