#!/bin/sh
# Tether diagnostics plugin (see README.md): expiry of TLS certificates.
#
# Certificates are listed in /etc/tether/tls-certs.list, one per line ('#' comments): a PEM
# file (absolute path) or host:port to connect to. Expiring within CRIT_DAYS (or expired, or
# unreadable) is critical, within WARN_DAYS a warning. Output: the JSON format.
# TETHER_TLS_CERTS_FILE overrides the list's path (tests).
WARN_DAYS=30
CRIT_DAYS=7
list=${TETHER_TLS_CERTS_FILE:-/etc/tether/tls-certs.list}

esc() { printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g'; }

# x509 TARGET ARGS...: runs `openssl x509 -noout ARGS` on the target's certificate.
x509() {
    target=$1
    shift
    case "$target" in
        /*) openssl x509 -in "$target" -noout "$@" 2>/dev/null ;;
        *) echo | timeout 10 openssl s_client -connect "$target" -servername "${target%:*}" 2>/dev/null |
            openssl x509 -noout "$@" 2>/dev/null ;;
    esac
}

if ! command -v openssl >/dev/null 2>&1; then
    echo '{"id":"tls-expiry","name":"TLS certificates","status":"unknown","summary":"openssl not found"}'
    exit 3
fi

checks=""
worst=0
n=0
add() { # name status value
    [ -n "$checks" ] && checks="$checks,"
    checks="$checks{\"name\":\"$(esc "$1")\",\"status\":\"$2\",\"value\":\"$(esc "$3")\"}"
}

targets=""
[ -r "$list" ] && targets=$(sed 's/#.*//' "$list")
for target in $targets; do
    n=$((n + 1))
    end=$(x509 "$target" -enddate | sed 's/^notAfter=//')
    if [ -z "$end" ]; then
        add "$target" critical "cannot read the certificate"
        worst=2
    elif ! x509 "$target" -checkend 0 >/dev/null; then
        add "$target" critical "expired $end"
        worst=2
    elif ! x509 "$target" -checkend $((CRIT_DAYS * 86400)) >/dev/null; then
        add "$target" critical "expires $end (within $CRIT_DAYS days)"
        worst=2
    elif ! x509 "$target" -checkend $((WARN_DAYS * 86400)) >/dev/null; then
        add "$target" warning "expires $end (within $WARN_DAYS days)"
        [ "$worst" -lt 1 ] && worst=1
    else
        add "$target" ok "expires $end"
    fi
done

case $worst in
    0) status=ok; summary="$n certificates valid for more than $WARN_DAYS days" ;;
    1) status=warning; summary="a certificate expires within $WARN_DAYS days" ;;
    *) status=critical; summary="a certificate is expired, unreadable or expires within $CRIT_DAYS days" ;;
esac
[ "$n" -eq 0 ] && summary="no certificates listed in $list"
echo "{\"id\":\"tls-expiry\",\"name\":\"TLS certificates\",\"status\":\"$status\",\"summary\":\"$(esc "$summary")\",\"checks\":[$checks]}"
exit $worst
