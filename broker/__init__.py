"""mesh-broker: an open, MESH-compatible message exchange."""
