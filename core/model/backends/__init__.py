"""The backends behind the seam; `core.model.registry` names them and loads only the one in use."""
