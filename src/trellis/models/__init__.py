"""Model providers: the interface, the offline simulator and function-backed test models."""
