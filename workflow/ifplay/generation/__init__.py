"""Text generation: backends, the generate stage, checkpoints, the teacher."""
