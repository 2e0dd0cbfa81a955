import sys

from procflow.cli import main

sys.exit(main())
