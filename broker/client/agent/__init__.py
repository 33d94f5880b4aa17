"""The folder agent: a drop-in for the Java MESH Client's folders (OUT, IN, SENT, FAILED, TEMP) on our client."""
