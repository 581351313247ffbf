"""The ``m3search`` command line: thin commands over the library."""
