"""Mail authentication: what smtpkit checks about mail that arrives, and how it signs mail that
leaves.

Each module does one job and can be used alone: ``verify`` checks SPF, DKIM and DMARC for a
message (``spf``, ``dkimverify`` and ``dmarc`` do the three parts, ``results`` holds what they
find and writes the Authentication-Results field); ``dnsbl`` asks DNS blocklists, ``rspamd``
asks a content scanner; ``keys`` and ``signing`` DKIM-sign outgoing mail. All of them are
blocking and bounded in time: the server runs them on threads.
"""
