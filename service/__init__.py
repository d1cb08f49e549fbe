"""The HTTP service (app, startup, routes, settings), the clip pipeline (`service.pipeline`) and batch
re-scoring (`service.rescore`). No torch, no training code: every network runs on ONNX Runtime.

The request path of POST /identify, in reading order: routers/identify.py -> routers/clips.py ->
pipeline/pipeline.py -> pipeline/embed.py -> gallery (gallery/gallery.py)."""
