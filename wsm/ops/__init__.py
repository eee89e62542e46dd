"""For operators: the ``wsm`` command line, a person's data exported or erased. May import any area."""
