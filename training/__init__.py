"""Offline training: synthetic data, manifests, pretraining, fine-tuning, evaluation, retraining."""

__all__: list[str] = []
