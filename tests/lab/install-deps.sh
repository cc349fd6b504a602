#!/usr/bin/env bash
# Install everything the lab and the tests need on a fresh Debian machine, as root.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

DEBS=(postfix nsd unbound nginx dovecot-imapd dovecot-pop3d icinga2 nagios-nrpe-server nagios-nrpe-plugin
      monitoring-plugins-standard python3-venv mandoc make iproute2 openssl procps
      # the Nagios Core daemon of tests/test_nagios_daemon.py (nagios4 would add its CGIs,
      # Apache and PHP)
      nagios4-core
      # the Carbon and the InfluxDB that Icinga 2's GraphiteWriter and InfluxdbWriter feed
      # in tests/test_graphite.py
      graphite-carbon influxdb
      # the peers `make bench` compares with: check_rbl and check_ssl_cert, and what
      # they need that --no-install-recommends leaves out
      monitoring-plugins-contrib libmonitoring-plugin-perl libnet-dns-perl libnet-ip-perl
      libreadonly-perl libdata-validate-domain-perl libdata-validate-ip-perl
      libcapture-tiny-perl bind9-host)

missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # The lab runs its own instances; keep the packages' system daemons from starting.
    policy_created=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_created=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
fi

# Python packages from the known-good set (constraints.txt; CONSTRAINTS names another,
# as `make deps-latest` does for its candidate set), never whatever the registry serves
# that day.
PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -e '.[test,oauth]'

# The plugins where the nagios user (which runs icinga2 and nrpe) can run them: a
# virtualenv of Debian's python3 in /opt/check_smtp_posture, refreshed when the
# sources changed (Makefile, install-nagios-plugins). The Icinga and NRPE tests use it.
make -s --no-print-directory install-nagios-plugins CONSTRAINTS="$CONSTRAINTS"
