"""The `corral` commands that talk to a Corral server over HTTP (through `app.client`), in the manner of `gh`:
login once, then browse and act. The server-side commands (`serve`, `db`, `catalog`, `token`) stay in app.cli."""
