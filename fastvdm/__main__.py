import sys

from fastvdm.cli import main

sys.exit(main())
