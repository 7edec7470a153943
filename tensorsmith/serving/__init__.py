"""Serving (DESIGN.md §2, L5): stored models behind HTTP, over the ``Predictor`` and the store.

``app.create_app(ServeConfig)`` builds the FastAPI app: ``/v1/models``, predictions batched
across requests, OpenAI-compatible completions with continuous batching, ``/metrics``, health and
readiness, and a page at ``/``. Never imports training/ or finetune/. Nothing heavy is imported
here: ``tensorsmith serve --help`` stays light.
"""
