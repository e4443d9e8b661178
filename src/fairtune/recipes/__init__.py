"""Recipes: whole studies (audit, data, training, audit again) as one call each."""
