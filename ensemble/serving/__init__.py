"""`ensemble serve`: a finished run behind HTTP on Ray Serve (an extra: `pip install 'eager-ensembles[serve]'`).

    POST /predict   {"images": [...]} or a .npy body -> {"labels", "classes", "probabilities"}
    GET  /healthz   {"status": "ok"}
    GET  /          the model card from report.json

`requests` decides what to make of a request (pure functions), `replica` is the deployment each
replica runs, `application` builds and starts it (`ensemble.serve`, the CLI, and
`serve run ensemble.serving.application:app run_dir=...` for Ray's own tools).
"""
