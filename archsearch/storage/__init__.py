"""Where studies live: database URLs, opening Optuna's storage, riding out outages.

Below both the search (which runs studies) and the results (which read them back).
"""
