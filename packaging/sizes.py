#!/usr/bin/env python3
"""Print the size of every binary and check the MIPS agents against the flash budget.

usage: sizes.py --budget BYTES --aim BYTES FILE...

A file is a MIPS agent when its name contains "tether-agent-mips". Exit 1 when one of them is
over the budget (the build fails), 0 otherwise; over the aim is only reported.
"""

import argparse
import sys
from pathlib import Path

MIB = 1024 * 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, required=True)
    ap.add_argument("--aim", type=int, required=True)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    over = []
    for f in args.files:
        size = f.stat().st_size
        verdict = ""
        if "tether-agent-mips" in f.name:
            if size > args.budget:
                verdict = f"OVER the {args.budget / MIB:.1f} MiB budget"
                over.append(f.name)
            elif size > args.aim:
                verdict = f"within budget, over the {args.aim / MIB:.1f} MiB aim"
            else:
                verdict = f"within the {args.aim / MIB:.1f} MiB aim"
        print(f"{f.name:48} {size:>10} bytes {size / MIB:6.2f} MiB  {verdict}".rstrip())
    if over:
        print(f"size budget exceeded: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
