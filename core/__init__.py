"""What data, modules and the shared layers all use, below all of them: the error types, atomic
file writes, process groups and the slot runner, skeletons and evaluation protocols, geometry,
COCO loading, the bad-record policy of the readers and the dataset facts a module is built with.

Nothing here imports ``datamodules``, ``lightning_modules``, ``experiments`` or ``search``.
"""
