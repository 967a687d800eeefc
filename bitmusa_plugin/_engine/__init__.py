"""The I/O shells around the pure core: REST (httpx), the websocket streams (websockets),
delivery to plugins, the plugin registry, secrets, and the ``Session`` that owns them."""
