"""The services' lifecycle over real servers: what each API operation does, and when.

:mod:`.lifecycle`'s ``Lifecycle`` is the one object the API calls; it hands one
:mod:`.context` (store, node layout, per-service locks, worker threads,
background tasks) to each of its parts: :mod:`.provisioning` (create, delete,
resume), :mod:`.standbys` (HA and switchover), :mod:`.schedule` and
:mod:`.backups` (base backups and the WAL archive), :mod:`.restores` (restores,
read replicas, promotion), :mod:`.sampler` (metrics) and :mod:`.querystats`
(statement snapshots and logs); :mod:`.nodes` says where a service's servers
live and :mod:`.naming` names them. It may import
:mod:`~pgcloud_nb.sandbox.postgres`, :mod:`~pgcloud_nb.sandbox.telemetry`,
:mod:`~pgcloud_nb.sandbox.insights` and the bottom modules (errors, settings,
store), never :mod:`~pgcloud_nb.sandbox.api`; no part imports the lifecycle.
"""
