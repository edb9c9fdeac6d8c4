"""`python -m ldm serve`: the library over AUTOMATIC1111's HTTP API (/sdapi/v1/...), so that the
tools that speak it (webuiapi, painting-program plugins, bots) can drive it. FastAPI and uvicorn
are the optional extra `[serve]`; nothing else in the project imports this package.

    errors.py    Refused: a request refused, naming the field
    names.py     A1111 sampler and scheduler names -> samplers.SAMPLERS
    requests.py  the txt2img / img2img request bodies, and the fields refused
    images.py    base64 images in and out, the parameters text read back
    models.py    the checkpoints listed, and the one loaded
    jobs.py      the queue: one worker thread, progress, interrupt and skip
    preview.py   the live preview of pred_x0
    generate.py  a txt2img / img2img request as a job on the tasks
    extras.py    extra-single-image (upscalers)
    server.py    what a running server holds; its options
    app.py       the routes
"""
