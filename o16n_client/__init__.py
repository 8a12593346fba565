"""Client-side helpers for o16n's users (nothing here runs in the controller)."""
