import sys

from connbench.cli import main

sys.exit(main())
