"""Results files as the analysis reads them."""


class FileRecord(dict):
    """A JSON object read from ``path`` whose missing keys raise ``KeyError("'key'
    in PATH")``: the scripts' "a results file lacks the key" then names the file."""

    def __init__(self, value, path):
        super().__init__(value)
        self.path = path

    def __missing__(self, key):
        raise KeyError(f'{key!r} in {self.path}')
