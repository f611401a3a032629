"""Writing the runner's files whole or not at all: a crash leaves the old file or the new one, never half of one."""

import os
from pathlib import Path


def write_whole(path: Path, text: str, *, private: bool = False) -> None:
    """Write `text` to `path` through a `.partial` beside it, renamed into place. `private`: mode 600 from the
    first byte (the file holds a token), else the umask's."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.unlink(missing_ok=True)
    mode = 0o600 if private else 0o666
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as file:
        file.write(text)
    partial.replace(path)
