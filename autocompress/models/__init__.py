"""Model loading and the one place that knows how architectures are laid out."""
