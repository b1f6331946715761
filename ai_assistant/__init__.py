"""AI assistant domain: LLM requests and email classification."""
