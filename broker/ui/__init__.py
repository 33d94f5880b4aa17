"""The web page for people who cannot automate (issue 16): sign in, inbox, send, sent; mounted at /ui.

Server-rendered HTML that works without JavaScript; the rules stay in the broker's services (messaging, directory,
auth), so a file sent here is a message like any other. docs/web.md describes it."""
