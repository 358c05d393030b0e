"""Flow definition: steps, graph building and validation, routing, policies."""
