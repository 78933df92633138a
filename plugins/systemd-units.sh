#!/bin/sh
# Tether diagnostics plugin (see README.md): failed systemd units, and units that must run.
#
# Every failed unit is critical. Units listed in /etc/tether/systemd-units.list (one per line,
# '#' comments) must be active; one that is not is critical. Output: the JSON format.
# TETHER_SYSTEMD_UNITS_FILE overrides the list's path (tests).
units_file=${TETHER_SYSTEMD_UNITS_FILE:-/etc/tether/systemd-units.list}

esc() { printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g'; }

if ! command -v systemctl >/dev/null 2>&1; then
    echo '{"id":"systemd-units","name":"systemd units","status":"unknown","summary":"systemctl not found: not a systemd system"}'
    exit 3
fi

checks=""
bad=0
total=0
add() { # name status value
    [ -n "$checks" ] && checks="$checks,"
    checks="$checks{\"name\":\"$(esc "$1")\",\"status\":\"$2\",\"value\":\"$(esc "$3")\"}"
}

failed=$(systemctl --failed --no-legend --plain 2>/dev/null | awk '{ if ($1 == "●") print $2; else print $1 }')
for unit in $failed; do
    add "$unit" critical failed
    bad=$((bad + 1))
done

if [ -r "$units_file" ]; then
    for unit in $(sed 's/#.*//' "$units_file"); do
        total=$((total + 1))
        state=$(systemctl is-active "$unit" 2>/dev/null)
        [ -n "$state" ] || state=unknown
        if [ "$state" = active ]; then
            add "$unit" ok "$state"
        else
            add "$unit" critical "$state"
            bad=$((bad + 1))
        fi
    done
fi

if [ "$bad" -gt 0 ]; then
    status=critical
    code=2
    summary="$bad units failed or not running"
else
    status=ok
    code=0
    summary="no failed units; $total required units active"
fi
echo "{\"id\":\"systemd-units\",\"name\":\"systemd units\",\"status\":\"$status\",\"summary\":\"$(esc "$summary")\",\"checks\":[$checks]}"
exit $code
