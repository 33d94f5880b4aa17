"""The web page's handlers: parse the form, call one service, render a page."""
