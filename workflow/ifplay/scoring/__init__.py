"""Scorers that need no model: IFEval's checkers (lm-eval's) and their four metrics."""
