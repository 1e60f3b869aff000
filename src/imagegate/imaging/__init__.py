"""Pillow work: validating client images, encoding outputs, drawing sandbox pictures.

Everything here is synchronous and CPU-bound; callers in async code run it through
:func:`imagegate.imaging.pool.run_image_task` so the event loop never blocks on Pillow.
"""
