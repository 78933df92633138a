#!/bin/sh
# Tether diagnostics plugin (see README.md): inode use of every real filesystem.
#
# Above WARN percent is a warning, above CRIT critical (edit them here). Output: the Monitoring
# Plugins format, one performance datum per mount point, so each becomes a check judged
# against the same limits.
WARN=90
CRIT=95

df -iP 2>/dev/null | awk -v warn="$WARN" -v crit="$CRIT" '
    NR == 1 { next }
    $1 ~ /^(tmpfs|devtmpfs|proc|sysfs|overlay-meta|cgroup.*|none|udev|shm)$/ { next }
    $2 == "-" || $2 == 0 { next }
    {
        pct = $5; sub(/%/, "", pct); pct += 0
        mount = $6; for (i = 7; i <= NF; i++) mount = mount " " $i
        gsub(/\x27/, "\x27\x27", mount)
        perf = perf sprintf(" \x27%s\x27=%d%%;%d;%d;0;100", mount, pct, warn, crit)
        n++
        if (pct > worst) { worst = pct; fullest = mount }
        if (pct > crit) { crits = crits sprintf(" %s %d%%", mount, pct) }
        else if (pct > warn) { warns = warns sprintf(" %s %d%%", mount, pct) }
    }
    END {
        if (n == 0) { print "INODES UNKNOWN - no filesystem reports inodes"; exit 3 }
        if (crits != "") { printf "INODES CRITICAL -%s%s |%s\n", crits, warns, perf; exit 2 }
        if (warns != "") { printf "INODES WARNING -%s |%s\n", warns, perf; exit 1 }
        printf "INODES OK - %d filesystems, fullest %s at %d%% |%s\n", n, fullest, worst, perf
        exit 0
    }'
