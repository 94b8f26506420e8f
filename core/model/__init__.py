"""The model layer: the `Backend` seam, the prompt (character prefix + conversation), context
fitting, the backend registry and the backends themselves (`backends/`)."""
