"""HTTP plumbing shared by every handler: middlewares, body parsing, JSON responses."""
