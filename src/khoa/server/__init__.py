"""The HTTP side of a node: ASGI plumbing, the AWS request pipeline, admin routes, the change stream.

``khoa.app`` assembles these into the ASGI application uvicorn runs. Nothing below this package knows
about HTTP; nothing in it knows a service's internals (a service is its :class:`khoa.services.base.Service`).
"""
