"""Public checks, one module per assignment: closed forms and invariants only."""
