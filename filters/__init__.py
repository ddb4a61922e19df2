"""Selection of scored documents to a token budget."""
