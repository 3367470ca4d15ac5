"""Thin Lambda handlers, one module per function (`handlers.<name>.handler`)."""
