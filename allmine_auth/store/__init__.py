"""The store: every SQL statement, as plain functions named for what they do."""
