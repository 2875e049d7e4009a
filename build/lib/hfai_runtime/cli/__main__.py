import sys

from hfai_runtime.cli import main

sys.exit(main())
