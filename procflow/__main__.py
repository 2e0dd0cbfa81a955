from procflow.cli import main
import sys

sys.exit(main())
