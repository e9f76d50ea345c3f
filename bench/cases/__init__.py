"""One module per benchmark case; see bench/__main__.py."""
