"""Knowledge distillation from the base model: loss, constrained trainable weights, resumable training."""
