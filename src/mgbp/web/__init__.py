"""`mgbp serve`: a local web app around the generator of Algorithm 1 (images, videos, a live W preview).

- `mgbp.web.engine`: the work (models, previews, renders, the NIQE-against-W curve), no web framework;
- `mgbp.web.jobs`: one job per device, cancel between forward passes, time left;
- `mgbp.web.app`: the Gradio page and server (the optional extra `mgbp[web]`, imported only there).
"""
