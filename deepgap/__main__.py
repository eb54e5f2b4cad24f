import sys

from deepgap.cli import main

sys.exit(main())
