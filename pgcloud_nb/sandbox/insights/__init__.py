"""What a server records of its statements: pg_stat_statements, its JSON log, executions.

:mod:`.statements` reads pg_stat_statements and keeps snapshots of it (it has
no time dimension), with the duration quantiles; :mod:`.logs` indexes the
server's JSON log for windows and filters; :mod:`.executions` turns log lines
into a pattern's executions and activity. It works on what it is given (a
connection, a log folder), so it imports nothing of the sandbox outside this
room; the services keep each service's snapshots and log index, and the API
shapes slow query patterns and logs from them.
"""
