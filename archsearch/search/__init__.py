"""The search: spaces, the per-trial objective, the study and its workers, halving, finalize."""
