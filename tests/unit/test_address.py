"""engine.address: RFC 5321 mailboxes, IDNA, and refusal of anything that could inject."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.address import IDNA_LIBRARY, Address, normalise_address, parse_address, to_ascii_domain
from engine.errors import InputError

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


@pytest.mark.parametrize(
    ("text", "local", "domain", "utf8"),
    [
        ("a@example.com", "a", "example.com", False),
        ("John.Smith@Example.COM", "John.Smith", "example.com", False),
        ("x+tag@sub.example.co.uk", "x+tag", "sub.example.co.uk", False),
        ("!#$%&'*+/=?^_`{|}~-@x.org", "!#$%&'*+/=?^_`{|}~-", "x.org", False),
        ("a@localhost", "a", "localhost", False),
        ("a@a-b--c.example", "a", "a-b--c.example", False),
        ("a@123.example", "a", "123.example", False),
        ('"john smith"@example.com', '"john smith"', "example.com", False),
        ('"a@b"@example.com', '"a@b"', "example.com", False),
        ('"a\\"b"@example.com', '"a\\"b"', "example.com", False),
        ("jürgen@example.com", "jürgen", "example.com", True),
        ("用户@例子.广告", "用户", "xn--fsqu00a.xn--4rr70v", True),
        ("a@Bücher.example", "a", "xn--bcher-kva.example", False),
        ("a@xn--bcher-kva.example", "a", "xn--bcher-kva.example", False),
        ("a@XN--BCHER-KVA.example", "a", "xn--bcher-kva.example", False),
    ],
)
def test_valid(text: str, local: str, domain: str, utf8: bool) -> None:
    address = parse_address(text)
    assert address == Address(local, domain, utf8)
    assert str(address) == f"{local}@{domain}"
    assert normalise_address(text) == (str(address), domain)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty address"),
        ("a", "missing '@'"),
        ("@x.com", "empty local part"),
        ("a@", "empty domain"),
        ("a@[192.0.2.1]", "address literals"),
        ("a@[IPv6:::1]", "address literals"),
        ("a@192.0.2.1", "all digits"),
        ("a..b@x.com", "consecutive dots"),
        (".a@x.com", "start or end with a dot"),
        ("a.@x.com", "start or end with a dot"),
        ("a b@x.com", "only inside a quoted"),
        (" a@x.com", "only inside a quoted"),
        ("a@x.com ", "invalid character ' '"),
        ("a,b@x.com", "invalid character ','"),
        ("a@x..com", "empty label"),
        ("a@.x.com", "empty label"),
        ("a@x.com.", "end with a dot"),
        ("a@-x.com", "hyphen"),
        ("a@x-.com", "hyphen"),
        ("a@x_y.com", "invalid character '_'"),
        ("a@" + "x" * 64 + ".com", "label longer than 63"),
        ("a@" + ("x" * 60 + ".") * 5 + "com", "domain longer than 255"),
        ("x" * 65 + "@x.com", "local part longer than 64"),
        ("ü" * 33 + "@x.com", "local part longer than 64"),
        ("x" * 64 + "@" + ("y" * 60 + ".") * 3 + "y" * 20, "longer than 254"),
        ('""@x.com', "malformed quoted"),
        ('"a"b@x.com', "malformed quoted"),
        ('"a<b"@x.com', "angle brackets"),
        ("<a@x.com>", "angle brackets"),
        ("John <a@x.com>", "angle brackets"),
        ("a@x.com\r\nRCPT TO:<v@y.com>", "control character"),
        ("a@x\x00.com", "control character"),
        ("a\x7f@x.com", "control character"),
        ("a@xn--zz.com", "invalid IDNA label"),
        ("a@b\u00a0c.com", "invalid character"),
        ("a\u2028@x.com", "only inside a quoted"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        parse_address(text, field="recipients[3].to")
    assert info.value.field == "recipients[3].to"
    assert str(info.value).startswith("recipients[3].to: ")
    assert reason in str(info.value)
    with pytest.raises(InputError):
        normalise_address(text)


@pytest.mark.parametrize("value", [None, 3, b"a@x.com", ["a@x.com"]])
def test_not_a_string(value: object) -> None:
    with pytest.raises(InputError, match="must be a string"):
        parse_address(value, field="from")  # type: ignore[arg-type]


def test_default_field_name() -> None:
    with pytest.raises(InputError) as info:
        parse_address("nope")
    assert info.value.field == "address"


def test_idna_library_reported() -> None:
    assert IDNA_LIBRARY in ("idna", "stdlib-idna2003")


def test_to_ascii_domain() -> None:
    assert to_ascii_domain("MÜNCHEN.de") == "xn--mnchen-3ya.de"
    assert to_ascii_domain("Example.COM") == "example.com"
    with pytest.raises(InputError):
        to_ascii_domain("a b.com")


def test_idn_domain_invalid() -> None:
    with pytest.raises(InputError, match="internationalised domain"):
        parse_address("a@\u0663\u0661.com")  # Arabic-Indic digits alone: bidi rule / all digits


forbidden = st.sampled_from(["\r", "\n", "\r\n", "\x00", "<", ">", "\x7f", "\x1b", "\t", "\x0b"])


@given(st.text(max_size=30), forbidden, st.text(max_size=30))
def test_forbidden_characters_refused_everywhere(before: str, bad: str, after: str) -> None:
    for text in (before + bad + after, f"{before}{bad}{after}@example.com", f"a@ex{bad}ample.com"):
        with pytest.raises(InputError):
            parse_address(text)


@given(st.text(max_size=60))
def test_arbitrary_text_never_crashes_and_output_is_safe(text: str) -> None:
    try:
        address = parse_address(text)
    except InputError:
        return
    rendered = str(address)
    assert " " not in rendered or address.local.startswith('"')
    assert address.domain.isascii() and address.domain == address.domain.lower()
    assert address.needs_smtputf8 == (not address.local.isascii())
    assert not any(ord(c) < 32 or ord(c) == 127 or c in "<>" for c in rendered)


atoms = st.text(alphabet=ATEXT, min_size=1, max_size=10)
labels = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)


@given(
    st.lists(atoms, min_size=1, max_size=4),
    st.lists(labels, min_size=1, max_size=3),
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,5}", fullmatch=True),
)
def test_valid_dot_atoms_accepted(local_atoms: list[str], domain_labels: list[str], tld: str) -> None:
    local = ".".join(local_atoms)
    domain = ".".join([*domain_labels, tld])
    address = parse_address(f"{local}@{domain}")
    assert address == Address(local, domain.lower(), False)
    assert normalise_address(f"{local}@{domain}") == (f"{local}@{domain.lower()}", domain.lower())


def test_stdlib_idna_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the idna package (dnspython lists it only as an extra) the stdlib codec is used."""
    import engine.address

    monkeypatch.setattr(engine.address, "_idna", None)
    assert parse_address("a@Bücher.example").domain == "xn--bcher-kva.example"
    assert parse_address("a@xn--bcher-kva.example").domain == "xn--bcher-kva.example"
    with pytest.raises(InputError):
        parse_address("a@" + "ü" * 70 + ".example")
