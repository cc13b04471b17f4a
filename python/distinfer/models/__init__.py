"""Models made offline for tests and demos: a random tiny Llama, and SmolLM2 from its PyPI package."""
