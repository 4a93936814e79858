#!/usr/bin/env python3
"""Line coverage per function from `llvm-cov show -format=text` (all files) on stdin: in the
section of the file whose path ends with /FILE, for each C function (a definition starting
at column 0, ending at the first "}" at column 0) whose name is given (all when none),
executed lines / instrumented lines; then the total over them.
Usage: llvm-cov show ... | covsum.py FILE LABEL [NAME...]"""
import re, sys

path, label, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
funcs, cur, inside = [], None, False
for raw in sys.stdin:
    if raw.startswith('/'):
        inside = raw.rstrip().endswith('/' + path + ':')
        continue
    if not inside:
        continue
    m = re.match(r'^\s*(\d+)\|\s*([0-9.kMG]*)\|(.*)$', raw.rstrip('\n'))
    if not m:
        continue
    count, code = m.group(2), m.group(3)
    if cur is None:
        d = re.match(r'^(?:static\s+)?[A-Za-z_][\w\s\*]*?\b([A-Za-z_]\w*)\s*\(', code)
        if d and not code.endswith(';') and not code.startswith(('#', ' ', '\t', '}', '/')):
            cur = [d.group(1), 0, 0]
    if cur is not None:
        if count != '':
            cur[2] += 1
            if count != '0':
                cur[1] += 1
        if code.startswith('}'):
            funcs.append(cur)
            cur = None
hit = tot = 0
for name, h, t in funcs:
    if wanted and name not in wanted:
        continue
    hit += h
    tot += t
    print(f'  {name:24s} {h:4d}/{t:<4d} lines {100.0 * h / t if t else 0:6.1f}%')
print(f'{label}: {hit}/{tot} lines {100.0 * hit / tot if tot else 0:.1f}%')
