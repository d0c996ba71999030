#!/usr/bin/env python3
"""Writes the texts of a labelled-contexts JSONL file (include/dreamstate/states.h) as one text file,
each context followed by a line holding only SEPARATOR, for `dreamstate prepare-data --split-on SEPARATOR`.
usage: contexts_text.py CONTEXTS.jsonl OUT.txt [SEPARATOR (default %%%)]"""
import json, os, sys

def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    sep = sys.argv[3] if len(sys.argv) == 4 else '%%%'
    tmp = f'{out}.tmp.{os.getpid()}'
    with open(src, encoding='utf-8') as f, open(tmp, 'w', encoding='utf-8') as o:
        for line in f:
            text = json.loads(line)['text']
            o.write(text if text.endswith('\n') else text + '\n')
            o.write(sep + '\n')
        o.flush()
        os.fsync(o.fileno())
    os.replace(tmp, out)

if __name__ == '__main__':
    main()
