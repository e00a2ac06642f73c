"""Sparsity methods (magnitude, Wanda, SparseGPT) behind one signature, chosen by name."""
