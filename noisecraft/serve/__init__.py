"""Serving trained runs: an HTTP API with diffusion-aware micro-batching (FastAPI under uvicorn), a web page
(Gradio), and the same batch function behind BentoML. Only this layer imports the web stack."""
