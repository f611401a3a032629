"""The wire: documents and rules the server and the runner agent share, with nothing but pydantic beneath them.

The agent (evals/) imports only this package from app/, so that a server bug or a compromised server is checked
by the same rules the server applies when it takes a request.
"""
