"""Image data: the one image lister and the one bicubic resize that every command uses."""
