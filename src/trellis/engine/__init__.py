"""The engine: scheduling, LLM calls with retries and validation, budgets, accounting."""
