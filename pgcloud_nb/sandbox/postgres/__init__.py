"""One real PostgreSQL server: binaries, data folder, settings files, OS user, passwords, TLS.

:mod:`.cluster`'s ``Cluster`` is the server (make, start, stop, configure,
remove); the other modules are its parts, and :mod:`.replication` links two
servers (streaming, promotion, point-in-time recovery). Who may reach a server
is decided in :mod:`.access` (pg_hba.conf, pg_ident.conf), :mod:`.roles` (the
API's ``postgres`` is no PostgreSQL superuser), :mod:`.sessions` (the sandbox's
own logins), :mod:`.private` (folders no other OS user can use) and
:mod:`.hardening` (servers an older sandbox left, brought under those rules). Everything here blocks
(the services call it in worker threads) and imports only the bottom modules
(errors, settings) and the core's contract data, never telemetry, insights,
the services or the API.
"""
