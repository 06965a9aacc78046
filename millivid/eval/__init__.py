"""Evaluation of rollouts: consistency and quality against rollout length."""
