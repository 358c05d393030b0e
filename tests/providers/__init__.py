"""Tests of the HTTP providers (openai:, anthropic:) and the client-side rate limiter."""
