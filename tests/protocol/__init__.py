"""Protocol engine tests: bytes in, replies out."""
