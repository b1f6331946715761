"""Flask blueprints of Fikiri Jobs."""
