"""autocompress."""
