import sys

from cnnx.cli import main

sys.exit(main())
