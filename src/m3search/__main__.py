"""``python -m m3search``: the command line, as the ``m3search`` script runs it."""

from m3search.cli.app import main

if __name__ == "__main__":
    main()
