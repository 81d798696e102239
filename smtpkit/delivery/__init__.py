"""Getting accepted mail onto disk: Maildir storage and the recipient router."""
