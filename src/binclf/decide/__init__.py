"""From scores to decisions: calibration, thresholds for an objective, metrics with intervals."""
