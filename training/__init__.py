"""Training pipeline: load -> split -> build -> fit -> evaluate -> export (see ``training.pipeline``)."""
