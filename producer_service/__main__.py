import sys

from producer_service.cli import main

sys.exit(main())
