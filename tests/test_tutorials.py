"""The tutorials (tutorials/*.ipynb) are committed with their outputs stripped and
executed by ``make test`` (pytest --nbmake); each writes only under runs/."""
import glob
import os
import re

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'tutorials', '*.ipynb')))


def test_the_four_tutorials_exist_stripped_and_valid():
    assert [os.path.basename(p)[:3] for p in NOTEBOOKS] == ['01_', '02_', '03_', '04_']
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata['kernelspec']['name'] == 'python3', path
        for cell in nb.cells:
            if cell.cell_type == 'code':
                assert cell.outputs == [] and cell.execution_count is None, f'{path}: outputs not stripped'
        code = '\n'.join(c.source for c in nb.cells if c.cell_type == 'code')
        # the only folder a notebook creates is under runs/ (gitignored)
        assert "OUT = os.path.join('runs', 'tutorials'" in code, path
        assert not re.search(r"""['"](/work|/tmp|/home)/""", code), f'{path}: an absolute path of this machine'


def test_make_test_executes_the_tutorials():
    with open(os.path.join(ROOT, 'Makefile')) as f:
        target = f.read().split('\ntest:', 1)[1].split('\n\n', 1)[0]
    assert re.search(r'pytest --nbmake .*tutorials/', target)
