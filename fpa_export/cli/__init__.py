"""Command-line interfaces (click): thin wrappers that parse, call one library function, print a line."""
