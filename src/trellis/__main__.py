"""``python -m trellis``: the same as the ``trellis`` command."""

from trellis.cli import main

if __name__ == "__main__":
    main()
