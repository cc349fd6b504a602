"""The lab's real mail servers: one Postfix instance (plus Dovecot for SASL and IMAP).

One Postfix master with its own config directory serves every lab endpoint
(master.cf has one smtpd service per address:port, each with `-o` overrides):

  name         address:port    greets as                  behaviour
  mx1          127.0.25.1:25   mx1.posture.test           STARTTLS, no AUTH, relay denied
  mx2          127.0.25.2:25   mx2.posture.test           same as mx1
  submission   127.0.25.3:587  submit.posture.test        STARTTLS required, AUTH only after it
  smtps        127.0.25.3:465  submit.posture.test        implicit TLS (wrapper mode), AUTH
  authfirst    127.0.25.4:25   authfirst.posture.test     AUTH offered before STARTTLS (a finding)
  notls        127.0.25.5:25   notls.posture.test         no STARTTLS at all
  openrelay    127.0.25.6:25   openrelay.posture.test     relays for anyone (delivery discarded)
  percentrelay 127.0.25.7:25   percentrelay.posture.test  as mx1, but relays user%ext@posture.test
  routerelay   127.0.25.8:25   routerelay.posture.test    as mx1, but relays @posture.test:user@ext
                                                          and ext!user@posture.test
  danersa      127.0.25.9:25   danersa.dane.test          as mx1, with the DANE lab's RSA
                                                          certificate (tests/lab/danelab.py)
  danedual     127.0.25.10:25  danedual.dane.test         as danersa, plus an ECDSA certificate
  danenotls    127.0.25.11:25  danenotls.dane.test        no STARTTLS
  loopmx1      127.0.25.13:25  mx1.loop.test              as mx1; forwards the round-trip probe
                                                          addresses to mx.monitor.test
  loopmx2      127.0.25.14:25  mx2.loop.test              same as loopmx1
  loopdrop     127.0.25.15:25  drop.loop.test             accepts the probe addresses with 250,
                                                          then discards: never forwards
  monitormx    127.0.25.16:25  mx.monitor.test            as mx1; files the forwarded probes into
                                                          the monitor mailbox (Dovecot)
  stocklimits  127.0.25.17:25  stocklimits.posture.test   as mx1, with Postfix's own error limits
                                                          (STOCK_ERROR_LIMITS), not the lab's
  dmarcreports 127.0.25.21:25  reportmx.dmarclab          the DMARC report destinations' MX
                                                          (tests/lab/dmarclab.py): takes every
                                                          recipient at RCPT but refuses
                                                          dmarclab.GONE_ADDRESS (550); what it
                                                          would accept is discarded

Error limits. The instance relaxes smtpd's error limits (main.cf: no error sleep, soft
limit 100, hard limit 200), so that a test's refusals never slow it down. stocklimits
keeps what Postfix ships and Debian's main.cf leaves alone (STOCK_ERROR_LIMITS): after
smtpd_soft_error_limit (10) errors in a session, smtpd sleeps smtpd_error_sleep_time
(1 s) before every reply it sends, whatever its code; at smtpd_hard_error_limit (20) it
says 421 and hangs up. A refused RCPT is an error; RSET and an accepted command are not.

Relaying through routing operators (`RELAY_TARGET` = relay-target.example, a
domain that is not ours). Postfix itself is safe here: it strips an RFC 821 source
route (`@a:user@b` is canonicalised to `user@b` before any check), honours `%` and
`!` only in the local part of a domain in $mydestination (the lab has none), and
trivial-rewrite flags a recipient whose local part holds `@`, `%` or `!` as
"routed", which reject_unauth_destination (and any access-map OK) refuses even
for our own domain unless `allow_untrusted_routing = yes`. So mx1 refuses every
routing form with 554 Relay access denied (RELAY_PROBE_REPLIES lists what each
endpoint answers). The two leaky endpoints are per-service overrides, a plausible
misconfiguration: `-o allow_untrusted_routing=yes` lets routed
`...@posture.test` recipients past the relay check (those no alias knows then
get 550 User unknown instead of mx1's 554), and a regexp virtual alias unwraps
one routing form; `-o cleanup_service_name=` points the smtpd at a cleanup of its
own (master.cf) with that alias map, so the accepted address really is relayed
(to `discard`; the maillog shows e.g. `to=<user@relay-target.example>,
orig_to=<user%relay-target.example@posture.test>`):

* percentrelay: the percent hack, `user%relay-target.example@posture.test` ->
  `user@relay-target.example` (percentrelay-alias.regexp, cleanup
  `percentcleanup`).
* routerelay: bang paths, `relay-target.example!user@posture.test` ->
  `user@relay-target.example` (routerelay-alias.regexp, cleanup `routecleanup`),
  and source routes `@posture.test:user@relay-target.example` (any
  `@hop[,@hop]:user@domain`): no Postfix setting keeps a source route (see
  above), so `-o smtpd_command_filter=regexp:routerelay-command.regexp` rewrites
  such an RCPT line into the bang path before smtpd parses it (logged as
  `replacing command "RCPT TO:<@...>" with "RCPT TO:<...!...>"`). The plain
  address and the percent hack are refused.

The map files (LAB_MAPS) are written into the config directory and named through
`$config_directory`.

Mail for `posture.test` users (USERS) is delivered to maildirs under
`<workdir>/mail/posture.test/<user>/`; other posture.test recipients get 550.
Nothing ever leaves the machine: every other destination goes to `discard`.
SASL (Dovecot): user SASL_USER, password SASL_PASSWORD (plain, login, cram-md5).
XOAUTH2 and OAUTHBEARER (SMTP AUTH, IMAP, POP3) take a bearer token of the lab IdP
(tests/lab/idp.py) instead: Dovecot's oauth2 passdb, consulted for those two mechanisms
only (the passwd-file one for the others), asks the shared IdP, which runs with Dovecot
on idp.IDP_ADDRESS:idp.SHARED_PORT, to introspect it (RFC 7662, over TLS with the lab
CA). Any test's own LabIdp signing with `idp_key` issues tokens it accepts.

The round-trip loop (tests/lab/roundtriplab.py names the domains and addresses).
loop.test, lossy.test and junky.test are virtual alias domains (loop-alias):
probe@loop.test and probe@lossy.test become monitor@monitor.test,
probe@junky.test becomes monitor-junk@monitor.test; any other recipient there gets
550 User unknown in virtual alias table. monitor.test is a relay domain whose
transport (transport_maps) is `smtp:[127.0.25.16]:25`, so the copy leaves
through Postfix's own smtp client (STARTTLS, `smtp_tls_security_level = may`,
trusting the lab CA) and arrives at monitormx: a second real hop, logged as
`relay=127.0.25.16[127.0.25.16]:25` and stamped `by mx.monitor.test ... with
ESMTPS`. (The smtp client greets with the instance's myhostname, so that hop's
Received: says `from mx1.posture.test`, whichever loop MX forwarded.) Only the
two monitor addresses are relay recipients (relay_recipient_maps): anything else
@monitor.test would be relayed to monitormx again and again. monitormx's own
cleanup (`monitorcleanup`) aliases them into a different domain,
inbox.monitor.test, a virtual mailbox domain (monitor-vmailbox) whose mailboxes
are the Maildir `monitor.test/monitor/` and its Maildir++ folder `.Junk/`. The
domain must differ: transport_maps override every address class, so a monitor.test
mailbox would be sent to smtp:[127.0.25.16] again instead of to virtual(8), and
it is excluded from relay_domains (which match subdomains) so that it is only a
mailbox domain. loopdrop sets `content_filter=discard:never forwarded`: qmgr
hands the accepted message to discard(8) (maillog: `status=sent (never
forwarded)`), the MX that accepts and loses mail.

monitorcleanup also stands in for a receiving side's filter (the lab runs no
milter): a header_checks PREPEND on the Subject: line adds a fixed
`Authentication-Results: mx.monitor.test; spf=pass smtp.mailfrom=loop.test; ...`
(MONITOR_AUTH_RESULTS); it verifies nothing.

Dovecot serves the maildirs on 127.0.25.3 (mail.monitor.test, certificate from
the lab CA): IMAP 143 (STARTTLS offered, plaintext login allowed), IMAPS 993,
POP3 110 (STLS offered), POP3S 995. MONITOR_USER logs in with MONITOR_PASSWORD;
the inbox namespace auto-creates Junk (\\Junk) and Trash (\\Trash). IDLE
notices a delivery through inotify, then waits a fixed 500 ms for more changes
(Dovecot's NOTIFY_DELAY_MSECS) before it sends EXISTS.

Certificates come from a lab CA (tests/lab/certs.py); `ca_file` is its PEM.
What reached the server is in the maillog (`maillog_file`, written by postlogd;
lines appear a moment after the fact, hence wait_for_log):
`mark()` / `log_since(mark)` / `wait_for_log(regex, since=mark)`, and parsed:
`disconnects(since=mark, endpoint="mx1")` (smtpd's per-connection command counts:
quit, rset, data, bdat...), `connection(port, since=mark)` (waits for one
connection's counts; `probe_only(counts)` says: no DATA/BDAT, ended with QUIT) and
`queued(since=mark)` (messages that were accepted).

How it runs: the queue directories are made here the way post-install would,
and `master -c DIR -w` is started directly (no `postfix start`, so no
postfix-script integrity scan and no default /etc/postfix/main.cf needed: a
root-started master may use any config directory; only set-gid tools such as
postqueue/sendmail would need `alternate_config_directories`). chroot is off,
`inet_interfaces = loopback-only` (Postfix refuses addresses that are on no
interface, and 127.0.25.x are only routed to lo) while every service in master.cf
binds its own address. `postfix -c DIR status|stop` works on it from a shell.

Several pytest sessions on one machine share the instance (tests/lab/sharedlock.py):
the first starts it, the last stops it. Usage::

    with LabPostfix() as pf:
        ...smtplib.SMTP("127.0.25.1", 25)...
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import dmarclab, idp
from tests.lab import roundtriplab as rt
from tests.lab.sharedlock import SharedLock

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

DOMAIN = "posture.test"
RELAY_TARGET = "relay-target.example"  # an outside domain for relay probes (discarded)
USERS = ("probe", "postmaster", "abuse", "roundtrip")
SASL_USER = "probe@posture.test"
SASL_PASSWORD = "lab-probe-secret"
IMAP_ADDRESS = ("127.0.25.3", 143)

#: the lab's shared state (CA, instance directories, locks); LAB_DIR overrides
LAB_ROOT = Path(os.environ.get("LAB_DIR") or Path(tempfile.gettempdir()) / "check_smtp_posture-lab")

#: the shared lab IdP's pid (see LabPostfix._idp_pid)
IDP_PID_FILE = LAB_ROOT / "idp.pid"

# Postfix runs its unprivileged daemons as mail_owner and delivers as this uid.
MAIL_UID = MAIL_GID = 65534  # nobody / nogroup


@dataclass(frozen=True)
class Endpoint:
    name: str
    hostname: str
    address: str
    port: int
    options: tuple[str, ...]  # postconf overrides for this smtpd service
    starttls: bool = True
    auth: str = "none"  # none | after-tls | before-tls | implicit-tls
    implicit_tls: bool = False
    dane_keys: tuple[str, ...] = ()  # DANE lab certificates (danelab.py) by key: rsa, ec


#: smtpd's error limits as Postfix ships them (postconf -d), which Debian's main.cf keeps
STOCK_ERROR_LIMITS = ("smtpd_error_sleep_time=1s", "smtpd_soft_error_limit=10",
                      "smtpd_hard_error_limit=20")

_SUBMISSION_OPTS = ("smtpd_tls_security_level=encrypt", "smtpd_sasl_auth_enable=yes",
                    "smtpd_tls_auth_only=yes",
                    "smtpd_relay_restrictions=permit_sasl_authenticated,reject")


def _routing_relay_opts(name: str, cleanup: str) -> tuple[str, ...]:
    """smtpd overrides of an endpoint that relays one routing form (see the module doc)."""
    return ("allow_untrusted_routing=yes",
            f"virtual_alias_maps=regexp:$config_directory/{name}-alias.regexp",
            f"cleanup_service_name={cleanup}")


ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (
    Endpoint("mx1", "mx1.posture.test", "127.0.25.1", 25, ()),
    Endpoint("mx2", "mx2.posture.test", "127.0.25.2", 25, ()),
    Endpoint("submission", "submit.posture.test", "127.0.25.3", 587, _SUBMISSION_OPTS,
             auth="after-tls"),
    Endpoint("smtps", "submit.posture.test", "127.0.25.3", 465,
             ("smtpd_tls_wrappermode=yes",) + _SUBMISSION_OPTS,
             starttls=False, auth="implicit-tls", implicit_tls=True),
    # password mechanisms only: the server where a forced OAuth mechanism is not offered
    Endpoint("authfirst", "authfirst.posture.test", "127.0.25.4", 25,
             ("smtpd_sasl_auth_enable=yes", "smtpd_tls_auth_only=no",
              "smtpd_sasl_mechanism_filter=plain,login,cram-md5"), auth="before-tls"),
    Endpoint("notls", "notls.posture.test", "127.0.25.5", 25,
             ("smtpd_tls_security_level=none",), starttls=False),
    Endpoint("openrelay", "openrelay.posture.test", "127.0.25.6", 25,
             ("mynetworks=0.0.0.0/0",)),
    Endpoint("percentrelay", "percentrelay.posture.test", "127.0.25.7", 25,
             _routing_relay_opts("percentrelay", "percentcleanup")),
    Endpoint("routerelay", "routerelay.posture.test", "127.0.25.8", 25,
             _routing_relay_opts("routerelay", "routecleanup")
             + ("smtpd_command_filter=regexp:$config_directory/routerelay-command.regexp",)),
    # the DANE lab's MX (tests/lab/danelab.py): fixed keys, so DNS can pin them
    Endpoint("danersa", "danersa.dane.test", "127.0.25.9", 25, (), dane_keys=("rsa",)),
    Endpoint("danedual", "danedual.dane.test", "127.0.25.10", 25, (),
             dane_keys=("rsa", "ec")),
    Endpoint("danenotls", "danenotls.dane.test", "127.0.25.11", 25,
             ("smtpd_tls_security_level=none",), starttls=False),
    # the round-trip loop (see the module doc and tests/lab/roundtriplab.py)
    Endpoint("loopmx1", *rt.MX1, 25, ()),
    Endpoint("loopmx2", *rt.MX2, 25, ()),
    Endpoint("loopdrop", *rt.DROP_MX, 25, ("content_filter=discard:never forwarded",)),
    Endpoint("monitormx", *rt.MONITOR_MX, 25, ("cleanup_service_name=monitorcleanup",)),
    Endpoint("stocklimits", "stocklimits.posture.test", "127.0.25.17", 25, STOCK_ERROR_LIMITS),
    Endpoint("dmarcreports", *dmarclab.REPORT_MX, 25,
             ("mynetworks=127.0.0.0/8",
              "smtpd_relay_restrictions=check_recipient_access "
              "texthash:$config_directory/dmarc-access, permit_mynetworks, "
              "reject_unauth_destination",
              "content_filter=discard:never delivered")),
)}

#: The recipients of check_open_relay's relay probes (see RELAY_PROBE_REPLIES).
RELAY_PROBE_FORMS: dict[str, str] = {
    "plain": f"user@{RELAY_TARGET}",
    "percent": f"user%{RELAY_TARGET}@{DOMAIN}",
    "source-route": f"@{DOMAIN}:user@{RELAY_TARGET}",
    "bang": f"{RELAY_TARGET}!user@{DOMAIN}",
    "quoted": f'"user@{RELAY_TARGET}"@{DOMAIN}',
    "double-at": f"user@{RELAY_TARGET}@{DOMAIN}",
    "ip-literal": "user@[192.0.2.1]",
    "unqualified": "user",
}

#: The reply code each endpoint gives at RCPT TO:<form> after STARTTLS (Postfix 3.7;
#: the same for MAIL FROM:<someone@example.org> and MAIL FROM:<>), in
#: RELAY_PROBE_FORMS order; tests/test_lab.py asserts it. RCPT TO:<postmaster@posture.test>
#: gets 250 everywhere, with either sender. The replies in full:
#:   250  "250 2.1.5 Ok"
#:   554  "554 5.7.1 <ADDR>: Relay access denied"
#:   550  "550 5.1.1 <ADDR>: Recipient address rejected: User unknown in virtual
#:        mailbox table"
#: where ADDR is the address as smtpd resolved it: a source route already stripped
#: (`<user@relay-target.example>`; on routerelay the bang path it was rewritten to),
#: the quoted form unquoted (`<user@relay-target.example@posture.test>`), `<user>`
#: as sent; else the path as sent. mx2 answers as mx1.
RELAY_PROBE_REPLIES: dict[str, tuple[int, ...]] = {
    #              plain  %   route  !   quoted  @@  [ip]  user
    "mx1":          (554, 554, 554, 554, 554,    554, 554,  550),
    "openrelay":    (250, 550, 250, 550, 550,    550, 250,  550),
    "percentrelay": (554, 250, 554, 550, 550,    550, 554,  550),
    "routerelay":   (554, 550, 250, 250, 550,    550, 554,  550),
}

#: What monitorcleanup prepends to every message it files (a stand-in: see the module doc)
MONITOR_AUTH_RESULTS = (f"Authentication-Results: {rt.MONITOR_MX[0]}; spf=pass "
                        f"smtp.mailfrom={rt.LOOP_DOMAIN}; dkim=none; dmarc=none "
                        f"header.from={rt.LOOP_DOMAIN}")

#: Map files written into the config directory (see the module doc). Regexp tables
#: match case-insensitively; `$1` etc. are the groups.
LAB_MAPS: dict[str, str] = {
    # percentrelay: local%domain@posture.test -> local@domain
    "percentrelay-alias.regexp": r'/^([^@%!":]+)%([^@%!":]+)@posture\.test$/ ${1}@${2}' "\n",
    # routerelay: domain!local@posture.test -> local@domain
    "routerelay-alias.regexp": r'/^([^@%!":]+)!([^@%!":]+)@posture\.test$/ ${2}@${1}' "\n",
    # routerelay: RCPT TO:<@hop[,@hop]:local@domain> -> RCPT TO:<domain!local@posture.test>
    "routerelay-command.regexp": r'/^(RCPT +TO: *<)@[^:<>]+:([^@%!":<>]+)@([^@%!":<>]+)>(.*)$/'
                                 r" ${1}${3}!${2}@posture.test>${4}" "\n",
    # the round-trip loop: probe addresses -> the monitor's two addresses
    "loop-alias": "".join(f"{rt.PROBE_LOCAL}@{domain} {rt.MONITOR_USER}\n"
                          for domain in (rt.LOOP_DOMAIN, rt.LOSSY_DOMAIN))
                  + f"{rt.PROBE_LOCAL}@{rt.JUNK_DOMAIN} {rt.MONITOR_JUNK_ADDRESS}\n",
    "transport": f"{rt.MONITOR_DOMAIN} smtp:[{rt.MONITOR_MX[1]}]:25\n",
    "monitor-recipients": f"{rt.MONITOR_USER} x\n{rt.MONITOR_JUNK_ADDRESS} x\n",
    # monitorcleanup: into the mailbox domain, then the Maildir and its Junk folder
    "monitor-alias": f"{rt.MONITOR_USER} monitor@{rt.INBOX_DOMAIN}\n"
                     f"{rt.MONITOR_JUNK_ADDRESS} junk@{rt.INBOX_DOMAIN}\n",
    "monitor-vmailbox": f"monitor@{rt.INBOX_DOMAIN} {rt.MONITOR_DOMAIN}/monitor/\n"
                        f"junk@{rt.INBOX_DOMAIN} {rt.MONITOR_DOMAIN}/monitor/.{rt.JUNK_FOLDER}/\n",
    "monitor-header.regexp": f"/^Subject:/ PREPEND {MONITOR_AUTH_RESULTS}\n",
    "dmarc-access": dmarclab.DMARC_ACCESS,
}

_MAIN_CF = """\
compatibility_level = 3.6
config_directory = {d}
queue_directory = {d}/queue
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = {daemons}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = mx1.posture.test
mydomain = posture.test
myorigin = $mydomain
mydestination =
mynetworks =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
smtpd_client_port_logging = yes
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = posture.test inbox.monitor.test
virtual_mailbox_maps = texthash:{d}/vmailbox texthash:{d}/monitor-vmailbox
virtual_alias_domains = loop.test lossy.test junky.test
virtual_alias_maps = texthash:{d}/loop-alias
relay_domains = !inbox.monitor.test monitor.test
relay_recipient_maps = texthash:{d}/monitor-recipients
transport_maps = texthash:{d}/transport
virtual_mailbox_base = {d}/mail
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
default_transport = discard:lab never sends mail out
relay_transport = discard:lab never sends mail out
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/tls/mx1.posture.test.crt
smtpd_tls_key_file = {d}/tls/mx1.posture.test.key
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/dovecot/run/auth-client
smtpd_sasl_auth_enable = no
smtpd_tls_auth_only = yes
smtpd_client_connection_rate_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200
anvil_rate_time_unit = 60s
delay_warning_time = 0
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
smtp_dns_support_level = disabled
smtp_tls_security_level = may
smtp_tls_CAfile = {d}/tls/ca.pem
smtp_tls_loglevel = 1
disable_vrfy_command = yes
"""

# Internal services; chroot off everywhere so nothing needs copying into a jail.
_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# cleanups of percentrelay and routerelay: their virtual aliases unwrap a routing form
percentcleanup unix n   -       n       -       0       cleanup
  -o virtual_alias_maps=regexp:$config_directory/percentrelay-alias.regexp
routecleanup unix n     -       n       -       0       cleanup
  -o virtual_alias_maps=regexp:$config_directory/routerelay-alias.regexp
# cleanup of monitormx: monitor addresses into the mailbox domain, the A-R stand-in
monitorcleanup unix n   -       n       -       0       cleanup
  -o virtual_alias_maps=texthash:$config_directory/monitor-alias
  -o header_checks=regexp:$config_directory/monitor-header.regexp
"""

#: the oauth2 passdb's settings: RFC 7662 introspection at the shared lab IdP
_DOVECOT_OAUTH2_CONF = """\
introspection_mode = post
introspection_url = https://{idp_address}:{idp_port}/introspect
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {d}/tls/ca.pem
"""

_DOVECOT_CONF = """\
base_dir = {d}/dovecot/run
state_dir = {d}/dovecot/state
instance_name = lab-dovecot
log_path = {d}/dovecot/dovecot.log
protocols = imap pop3
listen = {imap_address}
# STARTTLS/STLS offered on 143/110, implicit TLS on 993/995; plaintext login allowed
ssl = yes
ssl_cert = <{d}/tls/{mailbox_host}.crt
ssl_key = <{d}/tls/{mailbox_host}.key
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 xoauth2 oauthbearer
# failed logins answer at once: no delay, no per-IP penalty (anvil-auth-penalty off)
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:{d}/mail/%d/%n
namespace inbox {{
  inbox = yes
  mailbox {junk} {{
    special_use = \\Junk
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login cram-md5
  args = scheme=PLAIN username_format=%u {d}/dovecot/users
}}
# bearer tokens: introspected by the shared lab IdP (tests/lab/idp.py), never a password
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot/dovecot-oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%d/%n allow_all_users=yes
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {imap_address}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {imap_address}
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {imap_address}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = {imap_address}
    port = {pop3s_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""

# queue subdirectory -> (owner, group, mode), as post-install would make them
_QUEUE_DIRS = {
    "active": ("postfix", None, 0o700), "bounce": ("postfix", None, 0o700),
    "corrupt": ("postfix", None, 0o700), "defer": ("postfix", None, 0o700),
    "deferred": ("postfix", None, 0o700), "flush": ("postfix", None, 0o700),
    "hold": ("postfix", None, 0o700), "incoming": ("postfix", None, 0o700),
    "private": ("postfix", None, 0o700), "saved": ("postfix", None, 0o700),
    "trace": ("postfix", None, 0o700), "maildrop": ("postfix", "postdrop", 0o730),
    "public": ("postfix", "postdrop", 0o710), "pid": ("root", None, 0o755),
}


def available() -> str | None:
    """None if the lab's mail servers can run here, else the reason why not."""
    if os.geteuid() != 0:
        return "the lab's Postfix needs root"
    for path in (POSTFIX, f"{POSTFIX_DAEMONS}/master", DOVECOT):
        if not os.path.exists(path):
            return f"{path} is not installed (make install)"
    return None


class LabPostfix:
    """The lab Postfix + Dovecot, shared by concurrent sessions. See the module doc."""

    endpoints = ENDPOINTS
    users = USERS
    sasl_user = SASL_USER
    sasl_password = SASL_PASSWORD
    imap_address = IMAP_ADDRESS

    def __init__(self, workdir: str | os.PathLike | None = None):
        self.workdir = Path(workdir or LAB_ROOT / "postfix")
        self._lock = SharedLock(LAB_ROOT / "postfix.lock")
        self._running = False

    # -- paths -------------------------------------------------------------
    @property
    def maillog_file(self) -> Path:
        return self.workdir / "maillog"

    @property
    def ca_file(self) -> Path:
        """The lab CA certificate (PEM) that signed every endpoint's certificate."""
        return self.workdir / "tls" / "ca.pem"

    def mailbox(self, user: str = "probe") -> Path:
        return self.workdir / "mail" / DOMAIN / user

    def messages(self, user: str = "probe") -> list[Path]:
        """Delivered message files in `user`'s maildir (new/ and cur/)."""
        box = self.mailbox(user)
        return sorted(p for sub in ("new", "cur") if (box / sub).is_dir()
                      for p in (box / sub).iterdir())

    @property
    def idp_key(self) -> bytes:
        """The key the shared IdP checks access tokens with (give it to a LabIdp)."""
        return (self.workdir / "idp" / "key").read_bytes()

    def monitor_maildir(self) -> Path:
        """The Maildir of the round-trip monitor (roundtriplab.MONITOR_USER)."""
        local, _, domain = rt.MONITOR_USER.partition("@")
        return self.workdir / "mail" / domain / local

    def monitor_messages(self, folder: str | None = None) -> list[Path]:
        """Message files (new/ and cur/) of the monitor's INBOX, or of `folder`
        (e.g. roundtriplab.JUNK_FOLDER, the Maildir++ directory `.Junk`)."""
        box = self.monitor_maildir()
        if folder and folder.upper() != "INBOX":
            box = box / f".{folder}"
        return sorted(p for sub in ("new", "cur") if (box / sub).is_dir()
                      for p in (box / sub).iterdir())

    def endpoint(self, name: str) -> Endpoint:
        return self.endpoints[name]

    # -- maillog -----------------------------------------------------------
    def mark(self) -> int:
        """A position in the maillog; pass it to log_since()/wait_for_log()."""
        try:
            return self.maillog_file.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int = 0) -> str:
        try:
            with open(self.maillog_file, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 5.0) -> re.Match:
        """Wait until a maillog line after `since` matches `pattern`; raise if none does."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            text = self.log_since(since)
            match = regex.search(text)
            if match:
                return match
            if time.monotonic() > end:
                raise AssertionError(f"no maillog line matches {pattern!r} within {timeout}s; "
                                     f"log since mark:\n{text[-3000:]}")
            time.sleep(0.05)

    def wait_for_disconnects(self, count: int, since: int = 0, endpoint: str | None = None,
                             keep=lambda counts: True, timeout: float = 5.0) -> list:
        """disconnects() once `count` of them (those `keep` accepts) are logged, or what
        there is after `timeout`: smtpd logs a disconnect after the client has gone."""
        end = time.monotonic() + timeout
        while True:
            found = [c for c in self.disconnects(since, endpoint) if keep(c)]
            if len(found) >= count or time.monotonic() > end:
                return found
            time.sleep(0.05)

    def disconnects(self, since: int = 0, endpoint: str | None = None,
                    client_port: int | None = None) -> list[dict[str, str]]:
        """The per-connection command counts smtpd logs at disconnect, oldest first.

        e.g. ``{"endpoint": "mx1", "client": "127.0.0.1:40522", "ehlo": "1", "mail": "1",
        "rcpt": "0/1", "rset": "1", "quit": "1", "commands": "4/5"}`` ("ok/total" where
        some failed): a polite client's connection has "quit", and "data" is absent
        unless DATA was sent. Other sessions share the instance: filter by
        `client_port` (your socket's local port) to find your own connection.
        """
        found = []
        pattern = r"postfix/([\w.-]+)/smtpd\[\d+\]: disconnect from [^\[\s]*\[([^\]]+)\]:(\d+) (.*)"
        for m in re.finditer(pattern, self.log_since(since)):
            if endpoint and m.group(1) != endpoint:
                continue
            if client_port and int(m.group(3)) != client_port:
                continue
            counts = dict(item.split("=", 1) for item in m.group(4).split() if "=" in item)
            found.append({"endpoint": m.group(1), "client": f"{m.group(2)}:{m.group(3)}",
                          **counts})
        return found

    def connection(self, client_port: int, since: int = 0, endpoint: str | None = None,
                   timeout: float = 5.0) -> dict[str, str]:
        """One connection's disconnect counts (see disconnects()), waiting for its line.

        `client_port` is the local port of the client's socket (getsockname()[1]).
        """
        end = time.monotonic() + timeout
        while True:
            found = self.disconnects(since, endpoint, client_port)
            if found:
                return found[-1]
            if time.monotonic() > end:
                raise AssertionError(f"no disconnect line for client port {client_port} "
                                     f"within {timeout}s; log since mark:\n"
                                     f"{self.log_since(since)[-3000:]}")
            time.sleep(0.05)

    @staticmethod
    def probe_only(counts: dict[str, str]) -> bool:
        """Did the connection send no DATA and no BDAT, and end with QUIT?

        smtpd counts every command it saw (``data=1``, ``bdat=2``, ``quit=1``; a
        failed one as ``data=0/1``), so absence of the key means never sent.
        """
        return "data" not in counts and "bdat" not in counts and counts.get("quit") == "1"

    def queued(self, since: int = 0) -> list[str]:
        """Queue ids of messages fully received (qmgr saw them) since `since`."""
        return re.findall(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=", self.log_since(since))

    # -- lifecycle ---------------------------------------------------------
    def start(self, wait: float = 15.0) -> LabPostfix:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        if self._running:
            return self
        alone = self._lock.acquire(self._is_up)
        try:
            if alone:
                self._kill_stale()
                self._configure()
                self._start_idp(wait)
                self._start_dovecot(wait)
                self._start_postfix(wait)
        except BaseException:
            if alone:
                self._kill_stale()
            self._lock.close()
            raise
        if not alone and _read(self.workdir / "config.version") != self._config_version():
            missing = [e.name for e in self.endpoints.values()
                       if not _listening(e.address, e.port)]
            if missing:
                self._lock.close()
                raise RuntimeError(
                    f"the lab Postfix in {self.workdir}, started by another test session "
                    f"from another configuration, has no endpoint {', '.join(missing)}: "
                    f"let that session end (or `postfix -c {self.workdir} stop`) and run "
                    "again")
            import warnings

            warnings.warn("the lab Postfix shared with another session runs an older "
                          "configuration; it is rebuilt once every session has left",
                          stacklevel=2)
        self._lock.ready()
        self._running = True
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._lock.release():
            self._kill_stale()
        self._lock.close()

    def __enter__(self) -> LabPostfix:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------
    def _config_version(self) -> str:
        import hashlib

        text = repr((_MAIN_CF, _MASTER_CF, _DOVECOT_CONF, _DOVECOT_OAUTH2_CONF,
                     sorted(self.endpoints.items()),
                     sorted(LAB_MAPS.items()), self.users, self.sasl_user,
                     self.sasl_password, rt.MONITOR_USER, rt.MONITOR_PASSWORD,
                     rt.MAILBOX_HOST))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _configure(self) -> None:
        from tests.lab.certs import LabCA

        d = self.workdir
        if d.exists():
            shutil.rmtree(d)
        for sub in ("", "data", "tls", "dovecot", "dovecot/run", "dovecot/state", "queue",
                    "idp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(d / sub, 0o755)
        for parent in (d.parent, LAB_ROOT):
            os.chmod(parent, 0o755)
        shutil.chown(d / "data", "postfix", "postfix")
        os.chmod(d / "data", 0o700)
        for name, (owner, group, mode) in _QUEUE_DIRS.items():
            path = d / "queue" / name
            path.mkdir()
            shutil.chown(path, owner, group or owner)
            os.chmod(path, mode)
        mail = d / "mail"
        mail.mkdir()
        os.chown(mail, MAIL_UID, MAIL_GID)
        # The monitor's Maildir (and its Junk) exist from the start, as a real mailbox
        # would: not only after the first delivery made them.
        box = self.monitor_maildir()
        for folder in (box, box / f".{rt.JUNK_FOLDER}"):
            for sub in ("", "cur", "new", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        for path in (box.parent, *box.parent.rglob("*")):
            os.chown(path, MAIL_UID, MAIL_GID)

        ca = LabCA()
        ca.write(d / "tls")
        for host in sorted({e.hostname for e in self.endpoints.values()} | {rt.MAILBOX_HOST}):
            ca.issue([host]).write(d / "tls", host)
        from tests.lab.danelab import write_chain_files

        dane_files = write_chain_files(d / "tls")
        (d / "idp").chmod(0o700)
        (d / "idp" / "key").write_bytes(os.urandom(32))
        (d / "idp" / "idp.pem").write_bytes(idp.issue_pem(ca))
        (d / "dovecot" / "dovecot-oauth2.conf.ext").write_text(_DOVECOT_OAUTH2_CONF.format(
            d=d, idp_address=idp.IDP_ADDRESS, idp_port=idp.SHARED_PORT))

        # inet_interfaces stays loopback-only: Postfix insists its addresses sit on an
        # interface (127.0.25.x only route to lo); each service names its own address.
        (d / "main.cf").write_text(_MAIN_CF.format(
            d=d, daemons=POSTFIX_DAEMONS, uid=MAIL_UID, gid=MAIL_GID))
        lines = [_MASTER_CF]
        for e in self.endpoints.values():
            opts = [f"syslog_name=postfix/{e.name}", f"myhostname={e.hostname}",
                    f"smtpd_tls_cert_file={d}/tls/{e.hostname}.crt",
                    f"smtpd_tls_key_file={d}/tls/{e.hostname}.key", *e.options]
            if e.dane_keys:  # key, certificate and CA in one file per key (RSA, ECDSA)
                opts.append("smtpd_tls_chain_files="
                            + ",".join(str(dane_files[k]) for k in e.dane_keys))
            lines.append(f"{e.address}:{e.port} inet n - n - - smtpd\n"
                         + "".join(f"  -o {_master_option(o)}\n" for o in opts))
        (d / "master.cf").write_text("".join(lines))
        for name, text in LAB_MAPS.items():
            (d / name).write_text(text)
        (d / "vmailbox").write_text("".join(f"{u}@{DOMAIN} {DOMAIN}/{u}/\n"
                                            for u in self.users))
        (d / "dovecot" / "dovecot.conf").write_text(_DOVECOT_CONF.format(
            d=d, uid=MAIL_UID, gid=MAIL_GID, mailbox_host=rt.MAILBOX_HOST, junk=rt.JUNK_FOLDER,
            imap_address=self.imap_address[0], imap_port=self.imap_address[1],
            imaps_port=rt.IMAPS_PORT, pop3_port=rt.POP3_PORT, pop3s_port=rt.POP3S_PORT))
        users = d / "dovecot" / "users"
        users.write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in (
            (self.sasl_user, self.sasl_password), (rt.MONITOR_USER, rt.MONITOR_PASSWORD))))
        shutil.chown(users, "root", "dovecot")
        os.chmod(users, 0o640)
        (d / "config.version").write_text(self._config_version())

    def _start_postfix(self, wait: float) -> None:
        env = dict(os.environ, MAIL_CONFIG=str(self.workdir))
        # `master -w` daemonizes and returns once the master has initialised.
        code, output = _run_daemon([f"{POSTFIX_DAEMONS}/master", "-c", str(self.workdir), "-w"],
                                   self.workdir / "master.out", wait, env)
        if code != 0:
            raise RuntimeError(f"postfix master failed to start: {output}"
                               f"\n{self.log_since()[-3000:]}")
        self._wait_listening(wait)

    def _start_idp(self, wait: float) -> None:
        code, output = _run_daemon([sys.executable, "-m", "tests.lab.idp",
                                    str(self.workdir / "idp"), str(IDP_PID_FILE)],
                                   self.workdir / "idp" / "idp.out", wait,
                                   cwd=Path(__file__).resolve().parents[2])
        if code != 0:
            raise RuntimeError(f"the lab IdP failed to start: {output}")

    def _start_dovecot(self, wait: float) -> None:
        conf = self.workdir / "dovecot" / "dovecot.conf"
        code, output = _run_daemon([DOVECOT, "-c", str(conf)],
                                   self.workdir / "dovecot" / "dovecot.out", wait)
        if code != 0:
            raise RuntimeError(f"dovecot failed to start: {output}")
        sock = self.workdir / "dovecot" / "run" / "auth-client"
        end = time.monotonic() + wait
        while not sock.exists():
            if time.monotonic() > end:
                raise RuntimeError("dovecot auth socket did not appear: "
                                   + _read(self.workdir / "dovecot" / "dovecot.log"))
            time.sleep(0.02)

    def _wait_listening(self, wait: float) -> None:
        end = time.monotonic() + wait
        for e in self.endpoints.values():
            while not _listening(e.address, e.port):
                if time.monotonic() > end:
                    raise RuntimeError(f"lab postfix not listening on {e.address}:{e.port}:\n"
                                       + self.log_since()[-3000:])
                time.sleep(0.02)

    def _is_up(self) -> bool:
        pids = self._pids()
        if len(pids) != 2 or not all(_alive(p) for p in pids):
            return False
        if _read(self.workdir / "config.version") != self._config_version():
            return True  # another configuration (endpoints may differ): start() decides
        return self._idp_pid() is not None and _listening(idp.IDP_ADDRESS, idp.SHARED_PORT) \
            and all(_listening(e.address, e.port) for e in self.endpoints.values())

    def _pids(self) -> list[int]:
        pids = []
        for pidfile in (self.workdir / "queue" / "pid" / "master.pid",
                        self.workdir / "dovecot" / "run" / "master.pid"):
            try:
                pids.append(int(pidfile.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def _idp_pid(self) -> int | None:
        """The shared IdP's pid if it runs. Its pid file is outside the workdir, and
        _pids() leaves it out: a session of an older tests/lab/postfix.py, which knows
        no IdP, may share this instance (and remake the workdir); this one still finds
        and stops an IdP such a session left."""
        try:
            pid = int(_read(IDP_PID_FILE).split()[0])
        except (ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def _kill_stale(self, wait: float = 10.0) -> None:
        """Stop the instance that runs from our workdir, if any (ours or a leftover)."""
        pids = [p for p in (*self._pids(), self._idp_pid()) if p and _alive(p)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while any(_alive(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.02)
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Children (smtpd, auth, ...) exit once their master is gone; wait for the ports.
        while time.monotonic() < end and any(
                _listening(e.address, e.port) for e in self.endpoints.values()):
            time.sleep(0.02)


def _master_option(option: str) -> str:
    """A master.cf `-o` value; one with spaces goes in braces (Postfix >= 3.0)."""
    return f"{{ {option} }}" if " " in option else option


def _run_daemon(argv: list[str], outfile: Path, wait: float, env=None,
                cwd=None) -> tuple[int, str]:
    """Run a command that daemonizes; its output goes to a file (a pipe would stay open)."""
    with open(outfile, "wb") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              env=env, timeout=wait, cwd=cwd)
    return proc.returncode, _read(outfile)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _listening(address: str, port: int) -> bool:
    """Is a TCP socket listening on address:port? Read from /proc, so that
    checking does not leave a "lost connection" line in the server's log."""
    try:
        with open("/proc/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        rows = None
    if rows is None:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    return any(r.split()[1] == want and r.split()[3] == "0A" for r in rows)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
