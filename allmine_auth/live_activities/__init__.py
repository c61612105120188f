"""iOS Live Activities of a login session: registered by the app, read by the push sender, removed on end."""
