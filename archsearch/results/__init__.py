"""What a search leaves: MLflow tracking, the exported front, plots, reports, progress lines."""
