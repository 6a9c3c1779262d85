"""Self-instruct SFT sets and preference sets from LLM backends."""
