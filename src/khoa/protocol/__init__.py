"""Wire protocols: decoding AWS requests and encoding AWS responses and errors."""
