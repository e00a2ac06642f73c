"""The distill technique (``technique.py``): knowledge distillation from the base model, with its loss
(``loss.py``), constrained trainable weights (``weights.py``) and resumable training (``train.py``,
``checkpoint.py``)."""

from autocompress.techniques.distill.technique import Distill, DistillParams

__all__ = ["Distill", "DistillParams"]
