"""Numeric forecasting: simulated AR(1) series, forecast prompts, rational targets and the
regressions that measure extrapolation bias (used by the ``extrapolation`` audit and the
rational-forecast training data)."""
