"""One real PostgreSQL server: binaries, data folder, settings files, OS user, passwords, TLS.

:mod:`.cluster`'s ``Cluster`` is the server (make, start, stop, configure,
remove); the other modules are its parts, and :mod:`.replication` links two
servers (streaming, promotion, point-in-time recovery). Everything here blocks
(the services call it in worker threads) and imports only the bottom modules
(errors, settings) and the core's contract data, never telemetry, insights,
the services or the API.
"""
