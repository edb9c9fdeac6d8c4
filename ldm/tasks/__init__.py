"""The tasks, one file each: txt2img.py, img2img.py, inpaint.py, upscale.py (common.py: what they share).

Each is a function `task(sd, [image,] prompt, *, ...)`; StableDiffusion holds it as a method, so
`sd.txt2img(...)` IS `txt2img(sd, ...)`: one signature, keyword-only after the prompt.
"""
