"""Networks, model bundles and the inference engine (torch and MONAI only)."""

__all__: list[str] = []
