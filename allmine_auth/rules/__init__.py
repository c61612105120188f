"""The rules: codes, logins, sessions, accounts, abuse; plain values in and out, no request."""
