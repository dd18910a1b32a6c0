"""``python -m monai_t1t2 ...``: the ``monai-t1t2`` command without the installed console script."""

import sys

from monai_t1t2.cli import main

sys.exit(main())
