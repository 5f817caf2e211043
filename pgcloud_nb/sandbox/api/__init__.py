"""The HTTP API: the Starlette app, its routes by resource, request parsing, answers, realism.

:mod:`.app` builds the app from one list of routes; :mod:`.access` checks the
key and resolves the organization and the service a path names;
:mod:`.services`, :mod:`.config`, :mod:`.metrics` and :mod:`.insights` hold the
handlers by resource; :mod:`.wire` has the envelopes and request parsing,
:mod:`.views` what a service looks like, :mod:`.problems` the one table of HTTP
answers to the sandbox's errors, and :mod:`.realism` the rate limit, latency and
injected faults. This is the top room of the server: it may import
:mod:`~pgcloud_nb.sandbox.services` (calling only the ``Lifecycle``'s methods),
:mod:`~pgcloud_nb.sandbox.telemetry` and :mod:`~pgcloud_nb.sandbox.insights` to
shape answers, and the bottom modules (errors, settings, home, store), never
:mod:`~pgcloud_nb.sandbox.postgres`; only the launcher and ``__main__`` sit above it.
"""
