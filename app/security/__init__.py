"""Who may do what: the access rule of every route (access.py) and the routes of the tokens it reads (router.py)."""
