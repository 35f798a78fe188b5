"""The only package that touches key bytes. No I/O beyond the seal backends, no knowledge of AWS."""
