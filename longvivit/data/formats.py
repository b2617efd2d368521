"""Media member extensions of a shard sample: what the reader decodes and what the writer stores unchanged.

One list for both sides, so a shard the writer produces is always one the reader accepts. Shards written by
other tools (video2dataset, img2dataset) may use any of these; the writer stores only jpeg/png images as they
are and converts the rest.
"""

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "mpg", "mpeg", "m4v")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
