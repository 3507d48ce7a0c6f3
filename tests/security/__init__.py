"""The abuse suite: what a user with an account, a token holder or a stranger can do to a server."""
