import sys

from exactsum_admin.admin import main

sys.exit(main())
