"""Khoa's web console (``/console/``): server-rendered pages over Khoa's own API, acting as the
signed-in principal. ``app`` routes and secures; ``pages`` holds one module per area; ``api`` sends
the pages' calls through the request pipeline; ``sessions`` keeps signed-in sessions and sign-in links."""
