"""Received: fields read into hops, and hop delays: a corpus in the shapes real MTAs write.

Every field below is written in the shape its MTA produces (Postfix, Exim,
sendmail, qmail, Exchange, Gmail, Courier, Dovecot, appliances), with
documentation names and addresses. Each row states what a user would see in
the long output: receiving host, client name and address, protocol, TLS, and
the time as an exact UTC instant.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from check_smtp_posture.received import (
    Hop,
    HopDelay,
    describe_hop,
    hop_delays,
    hops,
    parse_date,
    parse_received,
    slowest,
)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=timezone.utc)


T10 = utc(2026, 11, 21, 10, 0, 0)
NO = None

# (id, field, by, sender, address, protocol, tls, timestamp)
CORPUS = [
    ("postfix-tls13",
     "from client.example (client.example [192.0.2.7])\r\n"
     "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
     "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
     "\t(No client certificate requested)\r\n"
     "\tby mx1.loop.test (Postfix) with ESMTPS id 4Zx3Kq1AbCz9\r\n"
     "\tfor <probe@loop.test>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mx1.loop.test", "client.example", "192.0.2.7", "ESMTPS", True, T10),
    ("postfix-plain",
     "from client.example (client.example [192.0.2.7])\n"
     "\tby mx1.example.org (Postfix) with ESMTP id 4AbCdE\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 11:00:00 +0100 (CET)",
     "mx1.example.org", "client.example", "192.0.2.7", "ESMTP", False, T10),
    ("postfix-no-rdns-pst",
     "from mail.example.net (unknown [198.51.100.23])\n"
     "\tby mx.example.org (Postfix) with ESMTPS id 4Xy1\n"
     "\tfor <a@example.org>; Sat, 21 Nov 2026 02:00:00 -0800 (PST)",
     "mx.example.org", "mail.example.net", "198.51.100.23", "ESMTPS", True, T10),
    ("postfix-submission",
     "from [192.0.2.50] (unknown [192.0.2.50])\n"
     "\t(Authenticated sender: user@example.org)\n"
     "\tby smtp.example.org (Postfix) with ESMTPSA id 4Ab\n"
     "\tfor <x@example.net>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "smtp.example.org", "[192.0.2.50]", "192.0.2.50", "ESMTPSA", True, T10),
    ("postfix-pickup",
     "by mail.example.org (Postfix, from userid 0)\n"
     "\tid 4AbCdE; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mail.example.org", NO, NO, NO, NO, T10),
    ("postfix-ipv6-tls12",
     "from mail.example.net (mail.example.net [IPv6:2001:db8:0:1::25])\n"
     "\t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\n"
     "\t(No client certificate requested)\n"
     "\tby mx.example.org (Postfix) with ESMTPS id 4Q; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mx.example.org", "mail.example.net", "2001:db8:0:1::25", "ESMTPS", True, T10),
    ("postfix-old-tls-esmtp",
     "from mail.example.net (mail.example.net [198.51.100.4])\n"
     "\t(using TLSv1 with cipher DHE-RSA-AES256-SHA (256/256 bits))\n"
     "\tby mx.example.org (Postfix) with ESMTP id 9F; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mx.example.org", "mail.example.net", "198.51.100.4", "ESMTP", True, T10),
    ("postfix-client-cert",
     "from relay.example.net (relay.example.net [198.51.100.9])\n"
     "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))\n"
     "\t(Client CN \"relay.example.net\", Issuer \"Example CA (R3)\" (verified OK))\n"
     "\tby mx.example.org (Postfix) with ESMTPS id 7C\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mx.example.org", "relay.example.net", "198.51.100.9", "ESMTPS", True, T10),
    ("postfix-utf8smtps",
     "from client.example (client.example [192.0.2.7])\n"
     "\tby mx.example.org (Postfix) with UTF8SMTPS id 4Ab\n"
     "\tfor <пример@example.org>; Sat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "mx.example.org", "client.example", "192.0.2.7", "UTF8SMTPS", True, T10),
    ("amavis-loopback",
     "from mx.example.org ([127.0.0.1])\n"
     "\tby localhost (amavis.example.org [127.0.0.1]) (amavis, port 10024) with ESMTP\n"
     "\tid AbCdEf12345 for <probe@example.org>;\n"
     "\tSat, 21 Nov 2026 10:00:00 +0000 (UTC)",
     "localhost", "mx.example.org", "127.0.0.1", "ESMTP", False, T10),
    ("gmail-mx",
     "from mail.example.net (mail.example.net. [198.51.100.7])\r\n"
     "        by mx.google.com with ESMTPS id a1b2c3d4e5f6.12.2026.11.21.02.00.00\r\n"
     "        for <probe@example.com>\r\n"
     "        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\r\n"
     "        Sat, 21 Nov 2026 02:00:00 -0800 (PST)",
     "mx.google.com", "mail.example.net", "198.51.100.7", "ESMTPS", True, T10),
    ("google-smtps",
     "from mail-sor-f41.google.com (mail-sor-f41.google.com. [192.0.2.41])\n"
     "        by mx.google.com with SMTPS id x7sor123.2026.11.21.02.00.00\n"
     "        for <a@example.com>\n"
     "        (Google Transport Security);\n"
     "        Sat, 21 Nov 2026 02:00:00 -0800 (PST)",
     "mx.google.com", "mail-sor-f41.google.com", "192.0.2.41", "SMTPS", True, T10),
    ("gmail-internal",
     "by 2001:db8:6a10:1234:b0:4d2:1a2b:3c4d with SMTP id x1csp1234567pxb;\r\n"
     "        Sat, 21 Nov 2026 02:00:01 -0800 (PST)",
     "2001:db8:6a10:1234:b0:4d2:1a2b:3c4d", NO, NO, "SMTP", False,
     utc(2026, 11, 21, 10, 0, 1)),
    ("exchange-online",
     "from AM0PR01MB1234.eurprd01.prod.example.com (2001:db8:208:12::34) by "
     "AM0PR01MB5678.eurprd01.prod.example.com (2001:db8:208:12::56) with Microsoft SMTP "
     "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7270.29;"
     " Sat, 21 Nov 2026 10:00:00 +0000",
     "AM0PR01MB5678.eurprd01.prod.example.com", "AM0PR01MB1234.eurprd01.prod.example.com",
     "2001:db8:208:12::34", "SMTP", True, T10),
    ("exchange-frontend",
     "from DB8P191CA0001.EURP191.PROD.EXAMPLE.COM (2001:db8::a) by\n"
     " VI1EUR05FT001.eop-eur05.prod.example.com (2001:db8::b) with Microsoft SMTP\n"
     " Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.8000.1 via\n"
     " Frontend Transport; Sat, 21 Nov 2026 10:00:00 +0000",
     "VI1EUR05FT001.eop-eur05.prod.example.com", "DB8P191CA0001.EURP191.PROD.EXAMPLE.COM",
     "2001:db8::a", "SMTP", True, T10),
    ("exchange-mapi",
     "from AM0PR01MB1234.eurprd01.prod.example.com ([fe80::1234:5678:9abc:def0]) by "
     "AM0PR01MB1234.eurprd01.prod.example.com ([fe80::1234:5678:9abc:def0%4]) with mapi "
     "id 15.20.7270.029; Sat, 21 Nov 2026 10:00:00 +0000",
     "AM0PR01MB1234.eurprd01.prod.example.com", "AM0PR01MB1234.eurprd01.prod.example.com",
     "fe80::1234:5678:9abc:def0", "MAPI", NO, T10),
    ("exchange-onprem-plain",
     "from EXCH01.corp.example.org (192.0.2.11) by EXCH02.corp.example.org (192.0.2.12)\n"
     " with Microsoft SMTP Server id 15.1.2507.23; Sat, 21 Nov 2026 11:00:00 +0100",
     "EXCH02.corp.example.org", "EXCH01.corp.example.org", "192.0.2.11", "SMTP", False, T10),
    ("exchange-onprem-tls",
     "from EXCH01.corp.example.org (192.0.2.11) by EXCH02.corp.example.org (192.0.2.12)\n"
     " with Microsoft SMTP Server (TLS) id 14.3.498.0; Sat, 21 Nov 2026 05:00:00 -0500",
     "EXCH02.corp.example.org", "EXCH01.corp.example.org", "192.0.2.11", "SMTP", True, T10),
    ("exim-tls13",
     "from client.example ([192.0.2.7]:54321 helo=helo.example)\n"
     "\tby mx.example.org with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384\n"
     "\t(Exim 4.96)\n"
     "\t(envelope-from <sender@example.net>)\n"
     "\tid 1tXyZa-000ABC-1b\n"
     "\tfor probe@example.org;\n"
     "\tSat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "helo.example", "192.0.2.7", "ESMTPS", True, T10),
    ("exim-plain-ip-only",
     "from [192.0.2.9] (port=41234 helo=unknown.example)\n"
     "\tby mx.example.org with esmtp (Exim 4.96)\n"
     "\t(envelope-from <tls1@example.net>)\n"
     "\tid 1tXyZb-000ABD-2c\n"
     "\tfor probe@example.org; Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "unknown.example", "192.0.2.9", "ESMTP", False, T10),
    ("exim-local",
     "from root by host.example.org with local (Exim 4.96)\n"
     "\t(envelope-from <root@host.example.org>)\n"
     "\tid 1tXyZc-000ABE-3d\n"
     "\tfor root@host.example.org; Sat, 21 Nov 2026 10:00:00 +0000",
     "host.example.org", "root", NO, "LOCAL", NO, T10),
    ("exim-old-cipher",
     "from mail.example.net ([198.51.100.5])\n"
     "\tby mx.example.org with esmtps (TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256)\n"
     "\t(Exim 4.92)\n"
     "\t(envelope-from <a@example.net>)\n"
     "\tid 1tXyZd-000ABF-4e; Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "mail.example.net", "198.51.100.5", "ESMTPS", True, T10),
    ("exim-esmtpsa-literal-helo",
     "from [192.0.2.33] (helo=[192.0.2.33])\n"
     "\tby smtp.example.org with esmtpsa  (TLS1.3) tls TLS_AES_128_GCM_SHA256\n"
     "\t(Exim 4.97)\n"
     "\t(envelope-from <user@example.org>)\n"
     "\tid 1tXyZe-000ABG-5f; Sat, 21 Nov 2026 10:00:00 +0000",
     "smtp.example.org", "[192.0.2.33]", "192.0.2.33", "ESMTPSA", True, T10),
    ("sendmail-tls",
     "from client.example (client.example [192.0.2.7])\n"
     "\tby mx.example.org (8.17.1/8.17.1) with ESMTPS id 5ALA00ab012345\n"
     "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 12:00:00 +0200",
     "mx.example.org", "client.example", "192.0.2.7", "ESMTPS", True, T10),
    ("sendmail-may-be-forged",
     "from helo.example (rdns.example [192.0.2.8] (may be forged))\n"
     "\tby mx.example.org (8.15.2/8.15.2) with ESMTP id 5ALA00ab012346\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 10:00:00 GMT",
     "mx.example.org", "helo.example", "192.0.2.8", "ESMTP", False, T10),
    ("sendmail-submit",
     "(from root@localhost)\n"
     "\tby host.example.org (8.17.1/8.17.1/Submit) id 5ALA00ab; Sat, 21 Nov 2026 10:00:00 +0000",
     "host.example.org", NO, NO, NO, NO, T10),
    ("sendmail-esmtp-verify-ok",
     "from relay.example.net (relay.example.net [198.51.100.3])\n"
     "\tby mx.example.org (8.17.1/8.17.1) with ESMTP id 5ALA00ab012347\n"
     "\t(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=OK)\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "relay.example.net", "198.51.100.3", "ESMTP", True, T10),
    ("qmail-uid",
     "(qmail 1234 invoked by uid 0); 21 Nov 2026 10:00:00 -0000",
     NO, NO, NO, NO, NO, T10),
    ("qmail-network",
     "(qmail 5678 invoked from network); 21 Nov 2026 10:00:00 -0000",
     NO, NO, NO, NO, NO, T10),
    ("qmail-smtp",
     "from unknown (HELO client.example) (192.0.2.7)\n"
     "  by mx.example.org with SMTP; 21 Nov 2026 10:00:00 -0000",
     "mx.example.org", "client.example", "192.0.2.7", "SMTP", False, T10),
    ("qmail-tls",
     "from client.example (HELO client.example) (192.0.2.7)\n"
     "  by mx.example.org with (DHE-RSA-AES256-GCM-SHA384 encrypted) SMTP;"
     " 21 Nov 2026 10:00:00 -0000",
     "mx.example.org", "client.example", "192.0.2.7", "SMTP", True, T10),
    ("qmail-auth",
     "from unknown (HELO client.example) (user@example.org@192.0.2.60)\n"
     "  by smtp.example.org with ESMTPA; 21 Nov 2026 10:00:00 -0000",
     "smtp.example.org", "client.example", "192.0.2.60", "ESMTPA", False, T10),
    ("dovecot-lmtp",
     "from mx.monitor.test ([192.0.2.25])\n"
     "\tby mx.monitor.test with LMTP\n"
     "\tid 8Kb3AQAB0GdHBgAAYOhUTQ\n"
     "\t(envelope-from <probe@loop.test>)\n"
     "\tfor <monitor@monitor.test>; Sat, 21 Nov 2026 10:00:01 +0000",
     "mx.monitor.test", "mx.monitor.test", "192.0.2.25", "LMTP", False,
     utc(2026, 11, 21, 10, 0, 1)),
    ("dovecot-lmtp-old",
     "from mail.example.org ([192.0.2.25])\n"
     "\tby mail.example.org (Dovecot) with LMTP id AbCdEf\n"
     "\tfor <user@example.org>; Sat, 21 Nov 2026 10:00:01 +0000",
     "mail.example.org", "mail.example.org", "192.0.2.25", "LMTP", False,
     utc(2026, 11, 21, 10, 0, 1)),
    ("courier-id-after-date",
     "from client.example (client.example [192.0.2.7])\n"
     "  (AUTH: LOGIN user@example.org, TLS: TLSv1.3,256bits,TLS_AES_256_GCM_SHA384)\n"
     "  by mail.example.org with ESMTPSA; Sat, 21 Nov 2026 10:00:00 +0000\n"
     "  id 0000000A.6540ABCD.00001234",
     "mail.example.org", "client.example", "192.0.2.7", "ESMTPSA", True, T10),
    ("yandex-ipv6-plain-brackets",
     "from mail.example.net (mail.example.net [2001:db8::5])\n"
     "\tby mx1.example.org (smtp/Yandex) with ESMTPS id AbCd-EfGh\n"
     "\tfor <probe@example.org>; Sat, 21 Nov 2026 13:00:00 +0300",
     "mx1.example.org", "mail.example.net", "2001:db8::5", "ESMTPS", True, T10),
    ("webmail-http",
     "from [192.0.2.77]\n\tby webmail.example.org\n\twith HTTP (HTTP/1.1 POST);"
     " Sat, 21 Nov 2026 10:00:00 +0000",
     "webmail.example.org", "[192.0.2.77]", "192.0.2.77", "HTTP", False, T10),
    ("webmail-https",
     "from [2001:db8::77] by webmail.example.org with HTTPS; Sat, 21 Nov 2026 10:00:00 +0000",
     "webmail.example.org", "[2001:db8::77]", "2001:db8::77", "HTTPS", True, T10),
    ("appliance-iso",
     "from mx.example.org by gw.example.org (Appliance) with ESMTP id 1;"
     " 2026-11-21T10:00:00.250Z",
     "gw.example.org", "mx.example.org", NO, "ESMTP", False,
     utc(2026, 11, 21, 10, 0, 0, 250000)),
    ("appliance-tls-comment-pst",
     "from mail.example.net (mail.example.net [198.51.100.7]) by spam.example.org with ESMTP"
     " id AbCd (version=TLSv1.2 cipher=AES256-GCM-SHA384 bits=256 verify=NO);"
     " Sat, 21 Nov 2026 02:00:00 -0800 (PST)",
     "spam.example.org", "mail.example.net", "198.51.100.7", "ESMTP", True, T10),
    ("lmtps",
     "from mx.example.org by store.example.org with LMTPS id 1; Sat, 21 Nov 2026 10:00:00 Z",
     "store.example.org", "mx.example.org", NO, "LMTPS", True, T10),
    ("clauses-out-of-order",
     "by mx.example.org with ESMTP id 1 from client.example ([192.0.2.7]) for <a@example.org>;"
     " Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "client.example", "192.0.2.7", "ESMTP", False, T10),
    ("semicolons-in-comments",
     "from client.example (odd; comment; here)\n"
     "\tby mx.example.org with ESMTP (and; another); Sat, 21 Nov 2026 10:00:00 +0000 (x; y)",
     "mx.example.org", "client.example", NO, "ESMTP", False, T10),
    ("unclosed-parenthesis",
     "from client.example (client.example [192.0.2.7]\n"
     "\tby mx.example.org with ESMTP id 1; Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "client.example", "192.0.2.7", "ESMTP", False, T10),
    ("no-semicolon",
     "from client.example by mx.example.org with SMTP id 123 Sat, 21 Nov 2026 10:00:00 +0000",
     "mx.example.org", "client.example", NO, "SMTP", False, T10),
    ("from-literal-only",
     "from [192.0.2.1]",
     NO, "[192.0.2.1]", "192.0.2.1", NO, NO, NO),
    ("field-name-included",
     "Received: from a.example ([192.0.2.2]) by b.example with ESMTP;"
     " Sat, 21 Nov 2026 10:00:00 +0000",
     "b.example", "a.example", "192.0.2.2", "ESMTP", False, T10),
    ("garbage", "this is not a received field at all", NO, NO, NO, NO, NO, NO),
    ("empty", "", NO, NO, NO, NO, NO, NO),
]


@pytest.mark.parametrize(
    ("field", "by", "sender", "address", "protocol", "tls", "timestamp"),
    [pytest.param(*row[1:], id=row[0]) for row in CORPUS],
)
def test_corpus_field_reads_as_its_mta_meant(field, by, sender, address, protocol, tls,
                                            timestamp):
    hop = parse_received(field)
    assert (hop.by, hop.sender, hop.address, hop.protocol, hop.tls) == (
        by, sender, address, protocol, tls)
    assert hop.timestamp == timestamp
    if timestamp is not None:
        assert hop.timestamp.utcoffset() == timedelta(0)


def test_raw_is_the_unfolded_value_kept_as_is():
    hop = parse_received("from a.example\r\n\tby b.example with SMTP;\r\n Sat, 21 Nov 2026 "
                         "10:00:00 +0000")
    assert hop.raw == "from a.example\tby b.example with SMTP; Sat, 21 Nov 2026 10:00:00 +0000"


# (date text after the ';', expected UTC instant or None)
DATES = [
    ("Sat, 21 Nov 2026 10:00:00 +0000", T10),
    ("21 Nov 2026 10:00:00 +0000", T10),  # no weekday
    ("Sun, 1 Nov 2026 10:00:00 +0000", utc(2026, 11, 1, 10)),  # one-digit day
    ("Sun,  1 Nov 2026 10:00:00 +0000", utc(2026, 11, 1, 10)),
    ("Sat,21 Nov 2026 10:00:00 +0000", T10),  # no space after the comma
    ("Sat, 21 Nov 2026 10:00:00 +0000 (UTC)", T10),
    ("Sat, 21 Nov 2026 02:00:00 -0800 (PST)", T10),
    ("Sat, 21 Nov 2026 02:00:00 -0800 PST", T10),  # zone name without parentheses
    ("Sat, 21 Nov 2026 15:30:00 +0530", T10),
    ("Sat, 21 Nov 2026 10:00:00 -0000", T10),  # RFC 5322: UT, local zone unknown
    ("Sat, 21 Nov 2026 10:00:00 GMT", T10),
    ("Sat, 21 Nov 2026 10:00:00 UT", T10),
    ("Sat, 21 Nov 2026 10:00:00 UTC", T10),
    ("Sat, 21 Nov 2026 10:00:00 utc", T10),
    ("Sat, 21 Nov 2026 05:00:00 EST", T10),
    ("Sat, 21 Nov 2026 06:00:00 EDT", T10),
    ("Sat, 21 Nov 2026 04:00:00 CST", T10),
    ("Sat, 21 Nov 2026 05:00:00 CDT", T10),
    ("Sat, 21 Nov 2026 03:00:00 MST", T10),
    ("Sat, 21 Nov 2026 04:00:00 MDT", T10),
    ("Sat, 21 Nov 2026 02:00:00 PST", T10),
    ("Sat, 21 Nov 2026 03:00:00 PDT", T10),
    ("Sat, 21 Nov 2026 10:00:00 Z", T10),
    ("Sat, 21 Nov 2026 10:00:00 A", T10),  # military letters mean -0000 (RFC 5322 §4.3)
    ("Sat, 21 Nov 2026 10:00:00 m", T10),
    ("Sat, 21 Nov 2026 10:00:00 Y", T10),
    ("Sat, 21 Nov 2026 10:00:00 J", None),  # J is no zone
    ("21 Nov 26 10:00:00 +0000", T10),  # two-digit years: < 50 is 20xx
    ("21 Nov 49 10:00:00 +0000", utc(2049, 11, 21, 10)),
    ("21 Nov 50 10:00:00 +0000", utc(1950, 11, 21, 10)),
    ("21 Nov 99 10:00:00 +0000", utc(1999, 11, 21, 10)),
    ("21 Nov 126 10:00:00 +0000", T10),  # three-digit year: + 1900
    ("21-Nov-26 10:00:00 GMT", T10),  # RFC 850
    ("Sat, 21 Nov 2026 10:00 +0000", T10),  # no seconds
    ("Sat, 21 Nov 2026 10:00:00.123 +0000", utc(2026, 11, 21, 10, 0, 0, 123000)),
    ("  Sat,\t21  Nov\t2026   10:00:00\t+0000  ", T10),  # tabs and runs of spaces
    ("\r\n\tSat, 21 Nov 2026\r\n 10:00:00 +0000", T10),  # folded
    ("Sat, 21 Nov 2026 10:00:00 +0000 (envelope-from x; y)", T10),  # trailing comment
    ("sat, 21 nov 2026 10:00:00 +0000", T10),  # lower case
    ("Saturday, 21 November 2026 10:00:00 +0000", T10),
    ("Sat Nov 21 10:00:00 2026 +0000", T10),  # ctime order
    ("Nov 21, 2026 10:00:00 +0000", T10),
    ("Sat, 21 Nov 2026 10:00:00 GMT+0100", utc(2026, 11, 21, 9)),
    ("2026-11-21T10:00:00Z", T10),  # ISO 8601, as appliances write it
    ("2026-11-21T11:00:00+01:00", T10),
    ("2026-11-21T11:00:00.250+0100", utc(2026, 11, 21, 10, 0, 0, 250000)),
    ("2026-11-21 10:00:00 +0000", T10),
    ("2026-11-21 10:00:00 UTC", T10),
    ("2026/11/21 10:00:00 +0000", T10),
    ("Sat, 31 Dec 2016 23:59:60 +0000", utc(2017, 1, 1)),  # a leap second
    ("Sat, 21 Nov 2026 10:00:00", None),  # no zone: not guessed as local time
    ("2026-11-21T10:00:00", None),
    ("Sat, 21 Nov 2026 10:00:00 CET", None),  # a zone name RFC 5322 does not define
    ("Sat, 21 Nov 2026 10:00:00 +2400", None),  # out of range
    ("Sat, 21 Nov 2026 10:00:00 +0160", None),
    ("Sat, 32 Nov 2026 10:00:00 +0000", None),
    ("Sat, 31 Feb 2026 10:00:00 +0000", None),
    ("Sat, 21 Nov 2026 25:00:00 +0000", None),
    ("Sat, 21 Nov 2026 10:61:00 +0000", None),
    ("Sat, 21 Nov 0000 10:00:00 +0000", None),
    ("Sat, 1 Jan 0001 00:00:00 +0100", None),  # before datetime's first instant in UTC
    ("Fri, 31 Dec 9999 23:00:00 -0500", None),  # after its last
    ("Sat, 21 Foo 2026 10:00:00 +0000", None),
    ("21 Nov 2026 10:00:00 +0000 +0100", None),  # two zones
    ("21 21 Nov 2026 10:00:00 +0000", None),
    ("", None),
    ("garbage", None),
    ("¹ Nov 2026 10:00:00 +0000", None),
    ("२१ Nov 2026 10:00:00 +0000", None),  # only ASCII digits are digits here
]


# a broken date part whose date the field reader still finds (at the start or the end)
SALVAGED = {
    "21 Nov 2026 10:00:00 +0000 +0100": T10,
    "21 21 Nov 2026 10:00:00 +0000": T10,
}


@pytest.mark.parametrize(("text", "expected"), DATES, ids=[d[0].strip()[:40] for d in DATES])
def test_date_after_the_last_semicolon(text, expected):
    assert parse_date(text) == expected
    hop = parse_received("from a.example by b.example with ESMTP id 1;" + text)
    assert hop.timestamp == SALVAGED.get(text, expected)


def test_timestamps_are_aware_and_in_utc():
    stamp = parse_date("Sat, 21 Nov 2026 02:00:00 -0800")
    assert stamp.tzinfo is timezone.utc and stamp.hour == 10


# --------------------------------------------------------------------------- chains


def chain_of(*stamps: datetime | None) -> list[Hop]:
    return [Hop(f"hop{i}.example", None, None, "ESMTPS", True, stamp, "")
            for i, stamp in enumerate(stamps)]


def test_hops_turn_top_down_values_into_oldest_first():
    newest = "from b.example by c.example with LMTP; Sat, 21 Nov 2026 10:00:02 +0000"
    oldest = "from a.example by b.example with ESMTPS; Sat, 21 Nov 2026 10:00:00 +0000"
    assert [h.by for h in hops([newest, oldest])] == ["b.example", "c.example"]


def test_first_hop_is_measured_from_the_send_time():
    delays = hop_delays(chain_of(utc(2026, 11, 21, 10, 0, 2), utc(2026, 11, 21, 10, 0, 5)),
                        sent=T10)
    assert [d.delay for d in delays] == [2.0, 3.0]
    assert not any(d.skewed for d in delays)


def test_without_send_time_the_first_hop_has_no_delay():
    delays = hop_delays(chain_of(T10, utc(2026, 11, 21, 10, 0, 1)))
    assert [d.delay for d in delays] == [None, 1.0]


def test_a_skewed_middle_clock_is_reported_not_hidden():
    chain = chain_of(T10, utc(2026, 11, 21, 9, 0, 0), utc(2026, 11, 21, 10, 0, 3))
    delays = hop_delays(chain, sent=utc(2026, 11, 21, 9, 59, 59))
    assert [d.delay for d in delays] == [1.0, -3600.0, 3603.0]
    assert [d.skewed for d in delays] == [False, True, False]
    assert describe_hop(delays[1]) == "hop1.example ESMTPS -3600s (clock skew)"


def test_an_unreadable_date_in_the_middle_measures_the_next_from_the_last_known():
    chain = chain_of(T10, None, utc(2026, 11, 21, 10, 0, 4))
    delays = hop_delays(chain, sent=T10)
    assert [d.delay for d in delays] == [0.0, None, 4.0]
    assert describe_hop(delays[1]) == "hop1.example ESMTPS (no readable date)"


def test_sub_second_send_time_against_whole_second_stamps_is_not_skew():
    sent = utc(2026, 11, 21, 10, 0, 0, 700000)
    delays = hop_delays(chain_of(T10, utc(2026, 11, 21, 10, 0, 1)), sent=sent)
    assert [d.delay for d in delays] == [0.0, 1.0]
    assert not any(d.skewed for d in delays)


def test_a_whole_second_earlier_than_the_send_time_is_skew():
    delays = hop_delays(chain_of(utc(2026, 11, 21, 9, 59, 59)),
                        sent=utc(2026, 11, 21, 10, 0, 0, 300000))
    assert delays[0].delay == -1.0 and delays[0].skewed


def test_sub_second_stamps_compare_exactly():
    stamp = utc(2026, 11, 21, 10, 0, 0, 200000)
    delays = hop_delays(chain_of(stamp), sent=utc(2026, 11, 21, 10, 0, 0, 700000))
    assert delays[0].delay == pytest.approx(-0.5) and delays[0].skewed


def test_slowest_is_the_largest_known_delay():
    delays = hop_delays(chain_of(T10, None, utc(2026, 11, 21, 10, 0, 9),
                                 utc(2026, 11, 21, 10, 0, 10)))
    assert slowest(delays).hop.by == "hop2.example"
    assert slowest(hop_delays(chain_of(None, T10))) is None
    assert slowest([]) is None


def test_describe_hop_names_both_ends_protocol_and_delay():
    hop = parse_received(CORPUS[0][1])
    assert describe_hop(HopDelay(hop, 0.4, False)) == (
        "mx1.loop.test <- client.example [192.0.2.7] ESMTPS 0.4s")
    skew = parse_received("from mx1.loop.test by mx.monitor.test with ESMTPS;"
                          " Sat, 21 Nov 2026 09:00:00 +0000")
    assert describe_hop(HopDelay(skew, -3602.0, True)) == (
        "mx.monitor.test <- mx1.loop.test ESMTPS -3602s (clock skew)")


def test_describe_hop_marks_tls_a_protocol_name_does_not_say():
    exchange = dict((row[0], row[1]) for row in CORPUS)["exchange-online"]
    line = describe_hop(HopDelay(parse_received(exchange), 1.25, False))
    assert line.endswith("[2001:db8:208:12::34] SMTP+TLS 1.2s")


def test_describe_hop_does_not_repeat_an_address_literal_sender():
    hop = parse_received("from [192.0.2.1] by mx.example.org with ESMTP;"
                         " Sat, 21 Nov 2026 10:00:00 +0000")
    assert describe_hop(HopDelay(hop, 2.0, False)) == "mx.example.org <- [192.0.2.1] ESMTP 2.0s"


def test_describe_hop_sanitises_what_strangers_wrote():
    hop = parse_received("from evil|name\x1b[31m by mx.example.org\x00x with ESMTP;"
                         " Sat, 21 Nov 2026 10:00:00 +0000")
    line = describe_hop(HopDelay(hop, 1.0, False))
    assert "|" not in line and line.isprintable()
    assert line.startswith("mx.example.org x <- evil name")


def test_describe_hop_of_an_empty_hop():
    assert describe_hop(HopDelay(parse_received(""), None, False)) == "? (no readable date)"


# --------------------------------------------------------------------------- properties

FIELD_PIECES = st.sampled_from([
    "from ", "by ", "with ", "id ", "for ", "via ", "(", ")", "[", "]", ";", " ", "\r\n\t",
    "\\", "client.example", "[192.0.2.1]", "[IPv6:2001:db8::1]", "ESMTPS", "helo=", "HELO ",
    "Sat, ", "21 ", "Nov ", "2026 ", "10:00:00 ", "23:59:60 ", "+0000", "-0000", "Z",
    "2026-11-21T10:00:00", "+2359", "9999 ", "0001 ", "Dec ", "31 ", "TLSv1.3 ", "¹",
])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(), st.lists(FIELD_PIECES, max_size=40).map("".join)))
def test_parse_received_never_raises(text):
    hop = parse_received(text)
    assert isinstance(hop, Hop)
    assert hop.timestamp is None or hop.timestamp.tzinfo is timezone.utc
    for delay in hop_delays([hop, hop], sent=T10):
        assert describe_hop(delay).isprintable()
