"""Self-supervised pretraining of the shared encoders (``mrinode train pretrain``).

Objectives follow BrainSegFounder / Tang et al. (``swin_ssl``), BrainMVP (``cross_sequence``),
PRISM (``prism``) and BrainDINO / MRI-CORE (``dino2d``); see :mod:`training.pretrain.registry`.
"""

__all__: list[str] = []
