"""The repository's root and the command lines that results and model cards record,
written so that a user can run them from the repository (no torch, no Lava: every
stage and script imports it).

A recorded command keeps every argument as typed except absolute paths: a path in
the repository becomes relative to it (``/home/me/lava-dtss/netx_models/x.net`` ->
``netx_models/x.net``), a path outside it under a ``runs`` folder becomes
``runs/...`` from that folder on (where the project's commands write by default),
and any other path outside it ``OUT/<file name>``, ``OUT`` standing for a folder
of the user's choice (the machine's own folders are not recorded).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository (or the installed tree)
OUT = 'OUT'


def portable_path(path: str) -> str:
    """``path`` as a recorded command shows it (see the module docstring); a relative
    path is returned unchanged."""
    if not os.path.isabs(path):
        return path
    norm = os.path.normpath(path)
    if norm == ROOT or norm.startswith(ROOT + os.sep):
        return os.path.relpath(norm, ROOT)
    parts = norm.split(os.sep)
    if 'runs' in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index('runs')
        return '/'.join(parts[i:])
    return f'{OUT}/{os.path.basename(norm)}'


def _portable_arg(arg: str) -> str:
    if os.path.isabs(arg):
        return portable_path(arg)
    key, eq, value = arg.partition('=')     # --out=/abs/path, --config name=/abs/path
    if eq and os.path.isabs(value):
        return f'{key}={portable_path(value)}'
    return arg


def portable_command(argv=None, program: str = 'python') -> str:
    """The command line ``program argv...`` (default ``sys.argv``) with every
    absolute path made portable (:func:`portable_path`)."""
    argv = sys.argv if argv is None else argv
    return ' '.join([program] + [_portable_arg(a) for a in argv])
