"""The contract suite: the same tests for every broker kind, each at its real broker."""
