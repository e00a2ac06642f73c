"""Deployable artifacts of compressed models."""
