#!/usr/bin/env python
"""Tables and plots of the DTSS study from the committed results (never trains).

    python scripts/report.py                       # results/fashion-mnist -> docs/results.md, docs/figures/
    python scripts/report.py --results results/digits-quick --doc /tmp/results.md --figures /tmp/fig

Reads results/<study>/<arm>/metrics.json (scripts/study.py), sensitivity.json
(scripts/analyze.py), headline.json and lava-*.json (scripts/run_lava.py --json),
and writes the Markdown page with its PNG figures. The report itself is
lava_dtss.analysis.report.write_report.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lava_dtss.analysis.report import ReportError, write_report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--results', default=os.path.join(ROOT, 'results', 'fashion-mnist'))
    p.add_argument('--doc', default=os.path.join(ROOT, 'docs', 'results.md'))
    p.add_argument('--figures', default=None, help='PNG folder (default beside --doc: figures/ for results.md, figures-NAME/ for results-NAME.md or NAME.md)')
    p.add_argument('--readme', default=None,
                   help='also rewrite the generated results section of this README (default: README.md '
                        'for the default study; "none" to skip)')
    args = p.parse_args(argv)
    if os.path.isdir(args.doc):
        raise ReportError(f'--doc {args.doc} is a folder; expected the Markdown file to write')
    doc, figures = write_report(args.results, args.doc, args.figures, args.readme)
    print(f'wrote {doc} and figures in {figures}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except ReportError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyError as e:     # a results file without a key the report needs
        print(f'error: a results file lacks the key {e.args[0] if e.args else e} (a half-copied or older '
              'results folder?)',
              file=sys.stderr)
        sys.exit(1)
    except (OSError, ValueError, TypeError) as e:   # an output path that is a folder, under /proc, ...
        where = f'{e.filename}: ' if getattr(e, 'filename', None) else ''
        print(f'error: {where}{getattr(e, "strerror", None) or e}', file=sys.stderr)
        sys.exit(1)
