"""Reply-text patterns per category, in two tiers (ours, not copied).

Receivers phrase the same refusal many ways and the enhanced code is often
vague (5.0.0, 5.7.1) or missing, so the words decide when they are clear.
``STRONG`` phrases name the cause ("user unknown", "blocked using Spamhaus")
and win over any enhanced code; ``WEAK`` phrases only say that something was
refused ("recipient address rejected", "access denied") and lose to a precise
enhanced code (5.7.26, 5.2.2...). Within a tier the first category whose
pattern matches wins, so the order matters: an SPF failure is phrased
"...rejected..." and a blocklist hit "...blocked...". Text is matched
lower-cased.
"""

from __future__ import annotations

import re
from typing import Final

from engine.bounce_rules import (
    AUTH,
    BAD_DOMAIN,
    BAD_MAILBOX,
    CONTENT,
    EXPIRED,
    MAILBOX_FULL,
    MESSAGE_TOO_BIG,
    NETWORK,
    OTHER,
    POLICY,
    RATE_LIMITED,
    REPUTATION,
    TLS,
)


def anchor(source: str) -> str:
    """The longest literal run every match of ``source`` must contain (outside
    groups, classes and optional characters); "" when there is none."""
    runs: list[str] = []
    run = ""
    depth = 0
    i = 0
    while i < len(source):
        ch = source[i]
        step = 1
        if ch == "\\":
            nxt = source[i + 1 : i + 2]
            step = 2
            if nxt in (".", "-", "/", "'", '"', " ") and depth == 0:
                run += nxt
                i += step
                continue
        elif ch in "?*{":
            run = run[:-1]  # the character before is optional; the run ends here
            if ch == "{":
                step = source.index("}", i) - i + 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "[":
            step = source.index("]", i + 1) - i + 1
        elif ch == "|" and depth == 0:
            return ""
        elif depth == 0 and ch not in ".+^$":
            run += ch
            i += 1
            continue
        runs.append(run)
        run = ""
        i += step
    runs.append(run)
    return max((r.strip() for r in runs), key=len, default="")


def _split_top(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(" and body[i - 1 : i] != "\\":
            depth += 1
        elif ch == ")" and body[i - 1 : i] != "\\":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return parts


def expand(source: str) -> list[str]:
    """``(?:a|b) rest`` -> ``a rest``, ``b rest`` when the whole has no anchor of its own."""
    if len(anchor(source)) >= 3:
        return [source]
    prefix = re.match(r"^(\\b)?\(\?:", source)
    if prefix is None:
        return [source]
    depth, end = 0, -1
    for i in range(prefix.end() - 3, len(source)):
        depth += {"(": 1, ")": -1}.get(source[i], 0) if source[i - 1 : i] != "\\" else 0
        if depth == 0:
            end = i
            break
    if end < 0 or source[end + 1 : end + 2] in ("?", "*", "{"):
        return [source]
    lead, rest = source[prefix.end() : end], source[end + 1 :]
    return [x for part in _split_top(lead) for x in expand((prefix.group(1) or "") + part + rest)]


class Phrases:
    """Alternatives checked cheaply: a regex runs only when its anchor (a
    literal it cannot match without) is in the text, so a reply costs a few
    substring searches instead of a long alternation tried at every position."""

    __slots__ = ("_alternatives",)

    def __init__(self, *alternatives: str) -> None:
        built = []
        for source in (x for a in alternatives for x in expand(a)):
            literal = anchor(source)
            if len(literal) < 2:
                raise ValueError(f"pattern without a literal anchor: {source!r}")
            built.append((literal, re.compile(source)))
        self._alternatives = tuple(built)

    def search(self, lower: str) -> bool:
        return any(literal in lower and rx.search(lower) for literal, rx in self._alternatives)


Rules = tuple[tuple[str, Phrases], ...]
_any = Phrases


STRONG: Final[Rules] = (
    (OTHER, _any(  # the recipient's own delivery program failed, whatever it printed
        r"procmail", r"maildrop", r"couldn't create \"?/", r"malformed address", r"syntactically",
    )),
    (AUTH, _any(
        r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"sender policy framework", r"domainkeys",
        r"unauthenticated (?:e-?mail|mail|message|sender)", r"not pass(?:ing)? authentication",
        r"fails? to pass authentication", r"authentication checks? (?:fail|did not pass)",
    )),
    (TLS, _any(
        r"starttls", r"\btls\b.{0,30}\b(?:required|failed|failure|handshake|negotiat)",
        r"(?:encryption|secure connection) (?:is )?required", r"mta-sts", r"certificate (?:verif|valid|expired|error)",
        r"ssl (?:handshake|error)",
    )),
    (POLICY, _any(  # about the envelope sender, not the recipient
        r"sender (?:address |domain )?(?:was )?(?:rejected|refused|denied|not allowed|blocked|unknown|invalid)",
        r"domain of sender address", r"sender verify failed", r"sender address (?:does not|doesn't) exist",
        r"(?:relay(?:ing)?|relay access) (?:denied|not permitted|prohibited|not allowed)",
        r"(?:unable|not permitted|not allowed|not authorized) to relay", r"we do not relay", r"no relaying",
        r"for policy reasons", r"protocol violation", r"permission to post", r"send mail as",
        r"not (?:a )?member of", r"group you tried to contact", r"groups\.google\.com",
    )),
    (MAILBOX_FULL, _any(
        r"mail ?box (?:is |was )?(?:full|over ?quota)", r"over ?quota", r"quota (?:exceeded|full)",
        r"exceeded? (?:the |his |her |its )?(?:mailbox |storage |disk )?(?:quota|storage)",
        r"mailbox size limit", r"(?:inbox|mailbox|mail ?folder|account) is (?:full|out of storage)",
        r"out of storage", r"insufficient (?:mailbox )?storage", r"not enough (?:disk )?space",
        r"mail ?box (?:\w+ )?exceed", r"messages in (?:the )?recipient'?s mailbox", r"full mailbox",
        r"storage (?:space )?(?:full|exceeded)", r"disk quota", r"box full", r"user(?:'s)? (?:mailbox )?is over",
    )),
    (MESSAGE_TOO_BIG, _any(
        r"message (?:is )?too (?:big|large)", r"(?:message|mail) (?:size|length) (?:exceeds|limit|too)",
        r"exceeds? (?:the )?(?:maximum |fixed )?(?:allowed )?(?:message )?size", r"size limit",
        r"too much (?:mail )?data", r"file too large", r"message too long", r"size exceeds",
    )),
    (CONTENT, _any(  # a URL in the message is listed: the message, not the sending IP
        r"(?:blacklisted|blocked|listed|bad) (?:url|link|uri)", r"\buribl\b", r"\bsurbl\b", r"url in (?:the )?message",
        r"\bvirus", r"malware", r"infected", r"phish", r"spam (?:content|detected|message)", r"content rejected",
        r"(?:considered|classified|looks like|identified as|detected as|marked as) (?:\w+ )?spam", r"\bube\b",
        r"message (?:was |has been )?(?:rejected|blocked|refused) (?:as|because|due to|for) (?:\w+ )?(?:spam|content)",
    )),
    (REPUTATION, _any(
        r"block ?list", r"black ?list", r"blacklisted", r"deny ?list", r"\b(?:rbl|dnsbl|rbls|uceprotect)\b",
        r"spamhaus", r"spamcop", r"\bsorbs\b", r"barracuda", r"cloudmark", r"reputation",
        r"listed (?:in|on|at|by) (?:the |our |a )?(?:spamhaus|sbl|xbl|pbl|zen|rbl|dnsbl|block|black)",
        r"blocked (?:using|by|because|for|due)", r"(?:ip|host|server|client|network|sending) "
        r"(?:address )?(?:is |has been |was )?(?:temporarily )?(?:blocked|banned|blacklisted|bloquee)",
        r"\bbanned\b", r"reverse (?:dns|lookup|dns lookup|address)", r"\bptr\b", r"\brdns\b",
        r"(?:cannot|can't|could not|unable to) (?:find|resolve|verify) your (?:host ?name|ip|reverse)",
        r"ip name lookup failed", r"dynamic(?:ally)? (?:assigned )?ip", r"dial-?up", r"residential",
        r"client host .{0,60}rejected", r"not (?:in|on) (?:the )?whitelist", r"unverif(?:y|i)able",
        r"mismatch(?:es)? (?:the )?client ip", r"smtp server of your (?:isp|provider)", r"my name was rejected",
        r"complaints? (?:from|about|rate)", r"too many complaints", r"poor (?:sending )?reputation",
    )),
    (RATE_LIMITED, _any(
        r"too many (?:connections|concurrent|simultaneous|sessions|messages|mails|emails|recipients)",
        r"rate[- ]?limit", r"throttl", r"unusual (?:rate|amount|volume)", r"(?:sending|message|connection) rate",
        r"slow down", r"too fast", r"at a rate", r"exceeded (?:the )?(?:maximum )?(?:number of )?connections",
        r"connection limit", r"(?:max|maximum) (?:number of )?connections", r"resources? (?:are )?(?:temporarily )?exhausted",
    )),
    (BAD_DOMAIN, _any(
        r"host (?:or domain name )?not found", r"host ?unknown", r"unknown host", r"no such (?:domain|host)",
        r"domain (?:name )?(?:not found|does not exist|doesn't exist|is not valid|unknown)",
        r"unrout(?:e)?able (?:mail )?domain", r"\bno mx\b", r"nxdomain", r"non-?existent (?:domain|host)",
        r"(?:invalid|unknown|bad) domain", r"null mx", r"no smtp service", r"does not accept (?:e-?)?mail",
        r"domain (?:is )?not (?:accepting|configured)", r"(?:couldn't|could not|can't|cannot|unable to) find "
        r"(?:a |any )?(?:mail exchanger|mx|host)", r"no (?:mail )?(?:exchanger|host) (?:found|for)",
        r"unresolvable", r"name or service not known", r"host \S+ not found", r"unrout(?:e)?able address",
    )),
    (BAD_MAILBOX, _any(
        r"user ?unknown", r"unknown (?:user|recipient|mailbox|local[- ]part|alias)",
        r"no such (?:user|mailbox|recipient|address|account|person|local user)",
        r"(?:user|mailbox|account|recipient|addressee)(?: name)? (?:\S+ )?(?:does not|doesn't|did not) exist",
        r"(?:invalid|unknown|bad|illegal) (?:recipient|mailbox|user|account|destination mailbox)",
        r"recipient (?:address )?(?:unknown|invalid|not found)", r"mailbox (?:not found|not available)",
        r"(?:account|mailbox|user|recipient) (?:is |has been )?(?:disabled|suspended|inactive|expired|closed|"
        r"deactivated|locked|deleted|removed|terminated)", r"recipient account is blocked", r"compte du destinataire",
        r"not (?:a )?(?:valid|known|local|registered) (?:user|recipient|mailbox|gateway user)",
        r"user not found", r"addressee unknown", r"not listed in", r"no valid recipients?",
        r"no longer (?:valid|available|active|in use|exists?|with|at|here|employed)", r"has moved", r"moved to",
        r"is not a registered", r"no account", r"user (?:invalid|not exist)", r"not our customer",
        r"recipient no longer", r"unknown or illegal", r"email account that you tried to reach",
        r"no mailbox here", r"not found in directory", r"refused due to recipient preferences",
        r"please check if address is correct", r"check the (?:recipient|e-?mail) address",
    )),
    (EXPIRED, _any(
        r"expired", r"retry time", r"retry timeout", r"queue lifetime", r"delivery time ?out",
        r"message timed out", r"no successful delivery", r"failed \d+ attempts", r"aborted after \d",
        r"(?:not|could not|couldn't|has not|was not) (?:been )?delivered (?:for|within|after|in) ",
        r"not reachable within", r"maximum[- ]time",
    )),
    (NETWORK, _any(  # the DNS failed (not "no such domain"), or the route or connection did
        r"connection (?:timed out|refused|reset|lost|dropped)", r"name service error", r"name server reply", r"lookup failure", r"unable to contact",
        r"(?:wasn't|was not|couldn't|could not) (?:able to )?establish", r"mail loop", r"too many hops",
    )),
)

WEAK: Final[Rules] = (
    (POLICY, _any(r"access denied", r"permission denied", r"not authori[sz]ed", r"administrative prohibition")),
    (BAD_MAILBOX, _any(
        r"recipient (?:address )?rejected", r"mailbox (?:is )?unavailable", r"(?:unknown|invalid|bad) address",
        r"address (?:is )?(?:unknown|invalid|rejected)", r"does not exist", r"doesn't exist", r"not exist",
        r"undeliverable address", r"disabled", r"suspended", r"deactivated",
    )),
    (CONTENT, _any(
        r"\bspam\b", r"spammy", r"content", r"suspicious", r"\bjunk\b", r"bulk (?:e-?)?mail", r"unsolicited",
        r"rfc ?(?:5322|2822|822|2045)", r"message-id", r"\bheaders?\b", r"\bmime\b", r"attachment",
        r"filtered", r"\bfilter", r"8-?bit", r"lines? too long", r"bare lf", r"malformed",
    )),
    (REPUTATION, _any(r"\bblocked\b", r"\bbloque")),
    (EXPIRED, _any(r"too long", r"gave up", r"giving up", r"delayed", r"not yet (?:been )?delivered")),
    (NETWORK, _any(
        r"connection (?:timed out|refused|reset|closed|lost|dropped)", r"timed? ?out", r"timeout",
        r"network (?:is )?unreachable", r"no route to host", r"(?:could not|couldn't|unable to|cannot|can't) "
        r"(?:connect|contact|establish)", r"(?:wasn't|was not) able to establish", r"lost connection",
        r"broken pipe", r"i/o error", r"temporar(?:y|ily)", r"system (?:error|problem|failure)",
        r"internal (?:server )?error", r"service (?:is )?(?:currently |temporarily )?(?:unavailable|not available)",
        r"insufficient system", r"(?:system|server|disk) (?:is )?full", r"too many hops", r"mail loop",
        r"loops? back", r"routing loop", r"hop count", r"local (?:configuration|delivery) (?:error|failed)",
        r"try (?:again )?later", r"transient", r"server (?:busy|error)", r"name service error",
        r"name server reply", r"lookup failure", r"transaction failed", r"not reachable",
    )),
    (POLICY, _any(
        r"relay", r"policy", r"not permitted", r"not allowed", r"prohibited", r"\brefused\b", r"\brefuse\b",
        r"\bdenied\b", r"administrative", r"\brejected\b", r"forbidden", r"restricted",
    )),
    (OTHER, _any(
        r"syntax error", r"command (?:not )?(?:recognized|implemented|unrecognized)", r"bad sequence",
        r"mailer error", r"program", r"unknown error",
    )),
)
