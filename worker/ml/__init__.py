"""The learning core: GAN, PIR estimator, tuning, checkpoints and the offline experiment.

Modules here take tensors, configs and paths and return metrics; no HTTP, SQL or Celery.
"""
