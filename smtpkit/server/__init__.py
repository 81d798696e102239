"""The I/O side: a selectors event loop, listening sockets and client connections."""
