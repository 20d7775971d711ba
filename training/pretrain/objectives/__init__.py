"""Pretraining objectives: ``swin_ssl``, ``cross_sequence``, ``prism``, ``dino2d`` (see
:mod:`training.pretrain.registry`)."""

__all__: list[str] = []
