"""Build webdataset shards from a manifest; see ``longvivit.data.make_shards`` for the options and format.

    python tools/make_shards.py --manifest FILE --out DIR [--maxcount N] [--maxsize BYTES] [--workers N]
        [--fps F] [--short-side S] [--min-seconds X] [--prefix P] [--overwrite] [--crf Q] [--reencode]
        [--timeout SECONDS] [--verify demux|decode]
"""

import sys

from longvivit.data.make_shards import main

if __name__ == "__main__":
    sys.exit(main())
