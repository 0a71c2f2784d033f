"""Imagined-vs-real rollouts, metrics, videos and plots."""
