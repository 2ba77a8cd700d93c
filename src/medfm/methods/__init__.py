"""One subpackage per method; each has a torch-free ``cli.py`` declaring ``GROUP``."""
