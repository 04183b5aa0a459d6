import sys

from beyond_inet.cli import main

sys.exit(main())
