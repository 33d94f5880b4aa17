"""The client side: an async MESH client, the `mesh-broker` client commands and the folder agent."""
