import sys

from leanseg.cli.main import main

sys.exit(main())
