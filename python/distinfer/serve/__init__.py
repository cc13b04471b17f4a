"""The OpenAI-compatible serving application: FastAPI app (api), Ray Serve app (app), bare uvicorn (bare)."""
