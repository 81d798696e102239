"""Sending queued mail to other servers: the queue runner and what it needs."""
