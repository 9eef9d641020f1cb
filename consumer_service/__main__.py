import sys

from consumer_service.cli import main

sys.exit(main())
