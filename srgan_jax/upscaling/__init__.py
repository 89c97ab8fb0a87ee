"""Upscaling with a trained generator: the tiled engine (`engine`), image files and the
`upscale` command (`files`), comparison figures (`figures`)."""
