#!/usr/bin/env python3
"""Guest instructions executed in the logged range: qemu -d in_asm,exec,nochain log on stdin.
in_asm blocks give each translated block's instruction count by its first pc; every exec line
("Trace N: host [cs_base/pc/flags/cflags] sym") adds that count."""
import re, sys
ninsn, cur, total, tbs = {}, None, 0, 0
insn = re.compile(r'^0x([0-9a-f]+):\s')
trace = re.compile(r'^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/')
start = None
count = 0
for line in sys.stdin:
    if line.startswith('IN:'):
        start, count = None, 0
        continue
    m = insn.match(line)
    if m:
        if start is None:
            start = int(m.group(1), 16)
        count += 1
        continue
    if start is not None and not line.strip():
        ninsn[start] = count
        start = None
        continue
    m = trace.match(line)
    if m:
        pc = int(m.group(1), 16)
        total += ninsn.get(pc, 0)
        tbs += 1
        if pc not in ninsn:
            sys.stderr.write('unknown tb %x\n' % pc)
print(total, tbs)
