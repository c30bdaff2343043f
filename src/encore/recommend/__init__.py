"""Recommendations: training from listening, serving, radio and generated mixes."""
