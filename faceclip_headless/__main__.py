import sys

from .portrait import main

sys.exit(main())
