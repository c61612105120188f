"""The Authentication API: one-time codes, logins, sessions and tokens."""
