"""What the test trees share: sockets, servers in a thread or a process, the base
template, waiting for a condition, a fake clock. Conftests import from here, never from
each other."""
