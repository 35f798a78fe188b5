"""One package per AWS service; each exposes a :class:`~khoa.services.base.Service`."""
