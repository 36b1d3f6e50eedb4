import sys

from app.launcher.cli import main

sys.exit(main())
