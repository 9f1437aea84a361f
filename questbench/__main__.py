"""``python -m questbench`` is the ``questbench`` command (for interpreters without the console script on PATH)."""
from .cli import main

main()
