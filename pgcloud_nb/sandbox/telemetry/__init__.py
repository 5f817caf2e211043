"""Metrics measured on a real server and its processes, and the answers made of them.

:mod:`.procfs` reads the processes (CPU, memory, I/O, TCP); :mod:`.sampling`
takes one :mod:`.samples` ``Sample`` of a server, keeping counters monotonic;
:mod:`.timeseries` turns samples into the bucketed ``/metrics`` result and
:mod:`.exposition` into the Prometheus text. It works on what it is given (a
connection, pids, a folder), so it imports nothing of the sandbox outside this
room (only :mod:`pgcloud_nb.sizes`); the services take the samples and the API
shapes them.
"""
