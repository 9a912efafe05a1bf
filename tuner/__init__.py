"""pyopt.tuner: hyperparameter tuning for pyopt optimizers on small built-in or user tasks."""
