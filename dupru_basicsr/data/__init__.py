"""Image data: the one image lister (images), the one bicubic resize (bicubic) and dataset preparation (prepare)."""
