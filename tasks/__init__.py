"""Tasks registry: importing this package registers every task."""
