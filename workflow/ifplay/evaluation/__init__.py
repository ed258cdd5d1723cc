"""Evaluations that need a model or a judge: the refiner as a judge, inference-time scaling."""
