"""Training of the pixel MRI sequence classifier (models.seqclf) on the synthetic engine."""
