"""Media member extensions of a shard sample: what the reader decodes and what the writer stores unchanged.

One list for both sides, so a shard the writer produces is always one the reader accepts. Shards written by
other tools (video2dataset, img2dataset) may use any of these; the writer stores only jpeg/png images as they
are and converts the rest; videos are stored as they are only where the loader's decoder reads them right.
"""

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "mpg", "mpeg", "m4v", "ts")
# What the writer may store unchanged (when decord reads it right and the frame rate is constant): not MPEG
# program or transport streams, whose frames decord misplaces (see video_io.mpeg_stream_kind).
STORED_VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "m4v")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
