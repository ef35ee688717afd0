"""Listing image files: one function, so that preparation, the data check and the report see the same files."""
import os
import os.path as osp

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def list_images(folder, extensions=IMAGE_EXTENSIONS, full_path=True):
    """Plain files directly in `folder` (not recursive, no hidden files), sorted by name.

    `extensions`: lower-case suffixes to keep; None keeps every file, as BasicSR's `scandir` does when it builds a
    paired dataset (the data check must see what BasicSR will try to read).
    """
    names = sorted(e.name for e in os.scandir(folder)
                   if not e.name.startswith('.') and e.is_file()
                   and (extensions is None or osp.splitext(e.name)[1].lower() in extensions))
    return [osp.join(folder, n) for n in names] if full_path else names
