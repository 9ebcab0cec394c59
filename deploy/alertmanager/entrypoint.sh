#!/bin/sh
# Render alertmanager.yml (a template) from the environment, then start Alertmanager on it.
#
# Alertmanager never expands environment variables in its configuration, and the
# prom/alertmanager image has no envsubst, so this does the substitution with sed.
# Required: SMTP_HOST SMTP_PORT SMTP_USER SMTP_FROM ALERT_EMAIL_TO PLATFORM_EMAIL_TO.
# The SMTP password is deliberately not one of them: Alertmanager reads it itself from
# smtp_auth_password_file, so it never lands in the rendered file or the process environment.
# AM_CONFIG_TEMPLATE, AM_CONFIG_OUT and AM_BINARY override the paths (the tests use them).
set -eu

template="${AM_CONFIG_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
out="${AM_CONFIG_OUT:-/tmp/alertmanager.yml}"
binary="${AM_BINARY:-/bin/alertmanager}"

# The placeholders sit in single-quoted YAML strings, where a quote is written twice; in a sed
# replacement, backslash, & and the | delimiter have meanings of their own.
escape() {
    printf '%s' "$1" | sed -e "s/'/''/g" -e 's/[\\&|]/\\&/g'
}

script=""
for name in SMTP_HOST SMTP_PORT SMTP_USER SMTP_FROM ALERT_EMAIL_TO PLATFORM_EMAIL_TO; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "entrypoint: environment variable $name is not set" >&2
        exit 1
    fi
    case "$value" in
        *'
'*)
            echo "entrypoint: environment variable $name holds a newline" >&2
            exit 1
            ;;
    esac
    script="${script}s|\\\${${name}}|$(escape "$value")|g
"
done

umask 077
sed -e "$script" "$template" > "$out"
exec "$binary" --config.file="$out" "$@"
