"""``python -m faceclip_core.convert SRC DST [--dtype ...] [--force]``: see ``release.py``."""
import sys

from .release import main

sys.exit(main())
