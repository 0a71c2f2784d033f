"""Datasets, the action-conditioned world model, and its trainer."""
