"""SPaR's baselines as methods of the workflow (Self-Rewarding, ...), sharing SPaR's stages by key."""
