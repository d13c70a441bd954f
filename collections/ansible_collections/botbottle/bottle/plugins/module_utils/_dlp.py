# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress proxy's data-loss prevention (DLP): pure decisions on bytes.

**PRIVATE** to the botbottle.bottle collection. The mitmproxy addon
(:mod:`._egress_addon`) hands requests, WebSocket messages, host names and responses
to the functions here and acts on what they return; nothing here touches mitmproxy,
the network or a file. Standard library only (the proxy image runs it on Python 3.13,
the controller type-checks and tests it on 3.11); ``brotli`` is imported lazily, see
*Fail closed* below.

**Settings** (:meth:`DlpSettings.from_manifest`): a route's ``dlp`` overrides the
bottle's default key by key (``outbound_detectors``, ``inbound_detectors``,
``outbound_on_match``); ``false`` switches a detector set off. A key set nowhere
takes :data:`DEFAULT_OUTBOUND` / :data:`DEFAULT_INBOUND` / :data:`DEFAULT_ON_MATCH`.

**Detectors** (outbound):

* ``known_secrets``: exact values -- the bottle's secret environment values and every
  route's credential -- of at least :data:`MIN_SECRET_LEN` bytes (shorter values
  cannot be told from ordinary text; they are listed in
  :attr:`DlpSettings.ignored_secrets` by name, never used). Matched in every decoded
  layer, and also as precomputed encodings in every layer: percent-encoded (reserved
  characters only, or every byte; upper and lower case hex), hex (both cases), and
  base64/base64url at each of the three byte offsets a value can start at inside a
  base64 stream (only the characters that encode the value alone are compared).
  Host names are compared without regard to case (they arrive lower-cased).
* ``token_patterns``: the built-in table :data:`TOKEN_PATTERNS_TABLE` of well-known
  credential formats, each with the page that documents it.
* ``entropy``: Shannon entropy of token-like runs (see :func:`_entropy_hit`): a run
  of 20-256 characters of ``[A-Za-z0-9+/_-]`` containing an upper-case letter, a
  lower-case letter and a digit, whose entropy is at least :data:`ENTROPY_RATIO`
  (0.93) times the expected entropy of a random base62 string of the same length
  (:func:`expected_entropy`: 4.03 bits at 20 characters, 4.55 at 32). That flags
  about 96% of random 20-character and 99% of 32+-character base62 tokens, and
  passes ordinary identifiers such as ``getUserAccountSettings2``, though not every
  long camel-case name. Hex strings (commit ids, digests, UUIDs) never qualify
  (no upper-case letter, or no lower-case one); a stretch of more than 256
  characters of the alphabet (e.g. a base64 image), or a line of a block wrapped
  over several lines, is data, not a token. On host labels: runs of 24+
  ``[a-z0-9]`` with a letter and a digit and at least :data:`HOST_ENTROPY_RATIO`
  x log2(min(length, 36)) bits per character. This detector is a heuristic with
  false positives (random ids look like keys) and is off by default.

**Decoding** (:func:`_layers`): the detectors run on the bytes as sent and on every
layer decoded from them, breadth first, up to :data:`MAX_DEPTH` nested decodings:
percent-encoding (repeated to a fixed point, at most :data:`MAX_PERCENT_ROUNDS`
rounds), base64 and base64url (padded or not, runs of 12+ characters, line breaks
inside a run joined, each run decoded at all four character alignments), hex (runs
of 16+ digits, both nibble alignments), JSON strings (keys and values, escapes
resolved), form fields, multipart parts (their own transfer encodings decoded),
UTF-16/UTF-32 text (by BOM or ``charset``), and gzip/zlib streams found inside a
layer. A body is first decoded by its ``Content-Encoding`` (``gzip``, ``x-gzip``,
``deflate``, ``br``, ``identity``, in reverse order of application).

**Fail closed**: when a detector is on and a body cannot be inspected, the answer is a
:class:`Finding` with detector :data:`UNDECODABLE`, which :func:`outcome` always
blocks with reason :data:`REASON_UNDECODABLE` (``dlp-undecodable``), whatever
``outbound_on_match`` says:

* a raw body over :data:`MAX_BODY` bytes (rule ``too-large``);
* a declared content coding that is unknown, corrupt or truncated (rule
  ``bad-encoding``), or ``br`` when the ``brotli`` module is missing or too old to
  cap its output (rule ``no-brotli``);
* a decompressed body, or a gzip/zlib stream found inside a layer, over
  :data:`MAX_INFLATED` bytes (rule ``too-large``; decompression stops at the cap, so
  a bomb costs at most that much memory);
* percent-encoding still present after :data:`MAX_PERCENT_ROUNDS` rounds (rule
  ``percent-depth``);
* more than :data:`SCAN_BUDGET` bytes of decoded layers in one scan (rule
  ``budget``).

Nesting deeper than :data:`MAX_DEPTH` decodings (other than percent rounds) is not
inspected: it passes. Detectors see bytes, so text in other encodings than ASCII
supersets and UTF-16/32 (e.g. EBCDIC, HTML entities, ``\\xNN`` escapes) is not
decoded.

**Surfaces and actions**: :func:`scan_request` (URL, each header, body),
:func:`scan_message` (a WebSocket message), :func:`scan_host` (the labels of a name
below a wildcard zone). :func:`outcome` turns a finding into the proxy's answer:
``block`` → 403 ``dlp-blocked``; ``supervise`` → 403 ``dlp-supervise`` (there is no
approval path yet); ``redact`` → :func:`redact_request` / :func:`redact_message`
replace every match by :data:`REDACTION` and scan the result again: if anything is
still found (a match only visible after decoding, e.g. a token inside base64 or an
escaped JSON string), redaction is refused and the request blocked
(``dlp-unredactable``). A host name cannot be redacted: ``redact`` blocks it.

**Inbound**: :func:`scan_response` (``naive_injection_detection``) matches a short
list of prompt-injection phrases in the first :data:`MAX_INBOUND` bytes of a
decoded response; the proxy flags the response with :data:`INJECTION_HEADER` and a
log entry, it never blocks. An undecodable response is flagged (rule
``undecodable``).

**The audit log**: :attr:`Finding.preview` never contains the value: a known
secret shows its name and length (``GITHUB_TOKEN(40 chars)``), a token pattern its
documented prefix (``ghp_…(40 chars)``), entropy only a length and bits.

**Where the addon calls this**: on the agent's request as it arrived -- before any
credential injection, which would otherwise match ``known_secrets`` -- with the raw
(still content-encoded) body and its ``Content-Encoding``: mitmproxy's own decoding
has no output cap.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import functools
import importlib
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote_from_bytes, unquote_to_bytes

# --------------------------------------------------------------------------- constants

KNOWN_SECRETS: Final = "known_secrets"
TOKEN_PATTERNS: Final = "token_patterns"
ENTROPY: Final = "entropy"
NAIVE_INJECTION: Final = "naive_injection_detection"
#: The detector of a :class:`Finding` for content that could not be inspected.
UNDECODABLE: Final = "undecodable"

OUTBOUND_DETECTORS: Final = frozenset({KNOWN_SECRETS, TOKEN_PATTERNS, ENTROPY})
INBOUND_DETECTORS: Final = frozenset({NAIVE_INJECTION})
ACTIONS: Final = frozenset({"block", "redact", "supervise"})

#: Defaults when neither the bottle nor the route sets a key: exact secrets and
#: well-known formats are precise; entropy is noisy and must be asked for.
DEFAULT_OUTBOUND: Final = frozenset({KNOWN_SECRETS, TOKEN_PATTERNS})
DEFAULT_INBOUND: Final = frozenset[str]()
DEFAULT_ON_MATCH: Final = "block"

#: Reasons the proxy answers with (stable: logs and tests match on them).
REASON_BLOCKED: Final = "dlp-blocked"
REASON_SUPERVISE: Final = "dlp-supervise"
REASON_UNDECODABLE: Final = "dlp-undecodable"
REASON_UNREDACTABLE: Final = "dlp-unredactable"

#: Shortest known secret used (bytes): shorter values match ordinary text.
MIN_SECRET_LEN: Final = 8
#: Largest raw (as sent) body or message inspected; larger ones are blocked.
MAX_BODY: Final = 8 * 1024 * 1024
#: Largest output of one decompression; larger is blocked (and never materialised).
MAX_INFLATED: Final = 16 * 1024 * 1024
#: Bytes of decoded layers one scan may produce (all layers together).
SCAN_BUDGET: Final = 64 * 1024 * 1024
#: Nested decodings (base64 in JSON in a form field is 3).
MAX_DEPTH: Final = 4
#: Percent-decoding rounds per layer before the content counts as undecodable.
MAX_PERCENT_ROUNDS: Final = 8
#: Bytes of a response the injection detector reads.
MAX_INBOUND: Final = 1024 * 1024

ENTROPY_MIN_RUN: Final = 20
ENTROPY_MAX_RUN: Final = 256
ENTROPY_RATIO: Final = 0.93
HOST_ENTROPY_MIN_RUN: Final = 24
HOST_ENTROPY_RATIO: Final = 0.80

#: What a redacted match is replaced by.
REDACTION: Final = b"[REDACTED]"
#: The header the proxy adds to a response naive_injection_detection flags.
INJECTION_HEADER: Final = "X-Bot-Bottle-Injection-Suspected"

# --------------------------------------------------------------------------- token patterns


@dataclass(frozen=True)
class TokenPattern:
    """A well-known credential format: ``prefix`` characters may appear in logs."""

    rule: str
    regex: re.Pattern[bytes]
    prefix: int
    source: str


def _tp(rule: str, pattern: bytes, prefix: int, source: str) -> TokenPattern:
    return TokenPattern(rule, re.compile(pattern), prefix, source)


#: Built in rather than taken from detect-secrets (PyPI, 1.5.0 of 2024-05): that
#: package's plugins are line scanners for source files with keyword heuristics, pull
#: in requests and PyYAML, and would add unreviewed code to the boundary image. Each
#: entry names where the format is documented.
TOKEN_PATTERNS_TABLE: Final[tuple[TokenPattern, ...]] = (
    _tp(
        "github-token",
        rb"gh[pousr]_[A-Za-z0-9]{36,251}",
        4,
        "https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/",
    ),
    _tp(
        "github-fine-grained-pat",
        rb"github_pat_[A-Za-z0-9_]{60,251}",
        11,
        "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/"
        "managing-your-personal-access-tokens",
    ),
    _tp(
        "gitlab-token",
        rb"gl(?:pat|oas|dt|rt|ptt|ft|imt|agent|soat)-[A-Za-z0-9_-]{20,}",
        6,
        "https://docs.gitlab.com/security/tokens/#token-prefixes",
    ),
    _tp(
        "aws-access-key-id",
        rb"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])",
        4,
        "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html"
        "#identifiers-unique-ids",
    ),
    _tp(
        "slack-token",
        rb"xox[abposre]-[A-Za-z0-9-]{10,}",
        5,
        "https://api.slack.com/concepts/token-types",
    ),
    _tp(
        "slack-webhook",
        rb"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}",
        25,
        "https://api.slack.com/messaging/webhooks",
    ),
    _tp(
        "stripe-live-key",
        rb"(?:sk|rk)_live_[A-Za-z0-9]{20,}",
        8,
        "https://docs.stripe.com/keys",
    ),
    _tp(
        "google-api-key",
        rb"AIza[A-Za-z0-9_-]{35}",
        4,
        "https://cloud.google.com/docs/authentication/api-keys",
    ),
    _tp(
        "google-oauth-access-token",
        rb"ya29\.[A-Za-z0-9_-]{20,}",
        5,
        "https://developers.google.com/identity/protocols/oauth2",
    ),
    _tp(
        "anthropic-key",
        rb"sk-ant-[a-z]{2,8}\d{0,3}-[A-Za-z0-9_-]{20,}",
        7,
        "https://docs.anthropic.com/en/api/overview#authentication; GitHub secret scanning "
        "https://docs.github.com/en/code-security/secret-scanning/introduction/"
        "supported-secret-scanning-patterns",
    ),
    _tp(
        "openai-key",
        rb"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"
        + rb"|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})",
        3,
        "https://platform.openai.com/docs/api-reference/authentication; GitHub secret scanning "
        "https://docs.github.com/en/code-security/secret-scanning/introduction/"
        "supported-secret-scanning-patterns",
    ),
    _tp(
        "huggingface-token",
        rb"hf_[A-Za-z0-9]{30,}",
        3,
        "https://huggingface.co/docs/hub/security-tokens",
    ),
    _tp(
        "npm-token",
        rb"npm_[A-Za-z0-9]{36}",
        4,
        "https://docs.npmjs.com/about-access-tokens",
    ),
    _tp(
        "pypi-token",
        rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
        5,
        "https://pypi.org/help/#apitoken",
    ),
    _tp(
        "sendgrid-key",
        rb"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        3,
        "https://www.twilio.com/docs/sendgrid/ui/account-and-settings/api-keys",
    ),
    _tp(
        "digitalocean-token",
        rb"do[por]_v1_[a-f0-9]{64}",
        7,
        "https://docs.digitalocean.com/reference/api/create-personal-access-token/",
    ),
    _tp(
        "azure-storage-key",
        rb"AccountKey=[A-Za-z0-9+/]{86}==",
        11,
        "https://learn.microsoft.com/en-us/azure/storage/common/storage-configure-connection-string",
    ),
    _tp(
        "private-key",
        rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        11,
        "RFC 7468 sections 10-11; OpenSSH PROTOCOL.key; RFC 4880 section 6.2",
    ),
    _tp(
        "jwt",
        rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        3,
        "RFC 7519 section 3 (a JOSE header is a JSON object: base64url 'eyJ')",
    ),
)

# --------------------------------------------------------------------------- errors and results


class DlpConfigError(ValueError):
    """A ``dlp`` mapping the settings cannot be built from."""


@dataclass(frozen=True)
class Finding:
    """One detector hit, safe to log: ``preview`` never holds the matched value."""

    detector: str  # one of OUTBOUND_DETECTORS, NAIVE_INJECTION or UNDECODABLE
    surface: str  # "url", "header:<name>", "body", "websocket", "host" or "response"
    rule: str  # the pattern, secret name, "entropy", or why it was undecodable
    preview: str
    path: str = "raw"  # the decodings that revealed it, e.g. "raw>percent>base64"

    def as_log(self) -> dict[str, str]:
        """The fields for the audit log."""
        return {
            "detector": self.detector,
            "surface": self.surface,
            "rule": self.rule,
            "preview": self.preview,
            "path": self.path,
        }


@dataclass(frozen=True)
class Outcome:
    """What the proxy does about a finding: ``action`` is block, redact or supervise."""

    action: str
    status: int
    reason: str


@dataclass(frozen=True)
class RedactedRequest:
    """A request with every match replaced by :data:`REDACTION`.

    When the body was content-encoded and had to change, it is forwarded decoded and
    ``headers`` no longer carry ``Content-Encoding``; ``Content-Length`` is dropped
    whenever the body changed (the proxy sets it again).
    """

    url: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class _UndecodableError(Exception):
    def __init__(self, rule: str, preview: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.preview = preview


# --------------------------------------------------------------------------- settings


def _detector_set(value: object, allowed: frozenset[str], key: str) -> frozenset[str]:
    if value is False:
        return frozenset()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise DlpConfigError(f"dlp.{key}: unknown detector(s) {', '.join(unknown)}")
        return frozenset(value)
    raise DlpConfigError(f"dlp.{key}: a list of detectors or false, not {value!r}")


def _secret_forms(value: bytes) -> list[bytes]:
    """``value`` and the encodings of it the scanner looks for in every layer."""
    forms = {value, value.hex().encode(), value.hex().upper().encode()}
    reserved = quote_from_bytes(value, safe="").encode()
    every = "".join(f"%{b:02X}" for b in value).encode()
    forms |= {reserved, reserved.lower(), every, every.lower()}
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + value + bytes(2))
        start = -(-shift * 8 // 6)  # first character made of the value's bits only
        end = (shift + len(value)) * 8 // 6  # one past the last such character
        core = encoded[start:end]
        forms |= {core, core.translate(_TO_URLSAFE)}
    return sorted(forms, key=len, reverse=True)


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True)
class DlpSettings:
    """The DLP in force for one route (build with :meth:`from_manifest`)."""

    outbound: frozenset[str] = DEFAULT_OUTBOUND
    inbound: frozenset[str] = DEFAULT_INBOUND
    on_match: str = DEFAULT_ON_MATCH
    #: (name, value) of each known secret used.
    secrets: tuple[tuple[str, bytes], ...] = ()
    #: names of the known secrets too short to use (see MIN_SECRET_LEN).
    ignored_secrets: tuple[str, ...] = ()
    _known: re.Pattern[bytes] | None = field(default=None, repr=False, compare=False)
    _known_ci: re.Pattern[bytes] | None = field(default=None, repr=False, compare=False)
    _names: Mapping[bytes, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.outbound <= OUTBOUND_DETECTORS:
            raise DlpConfigError(f"unknown outbound detectors {sorted(self.outbound)}")
        if not self.inbound <= INBOUND_DETECTORS:
            raise DlpConfigError(f"unknown inbound detectors {sorted(self.inbound)}")
        if self.on_match not in ACTIONS:
            raise DlpConfigError(f"dlp.outbound_on_match: {self.on_match!r}")
        names: dict[bytes, str] = {}
        for name, value in self.secrets:
            if len(value) < MIN_SECRET_LEN:
                raise DlpConfigError(f"known secret {name} is shorter than {MIN_SECRET_LEN}")
            for form in _secret_forms(value):
                names.setdefault(form, name)
        if names:
            alternation = b"|".join(re.escape(f) for f in sorted(names, key=len, reverse=True))
            object.__setattr__(self, "_known", re.compile(alternation))
            object.__setattr__(self, "_known_ci", re.compile(alternation, re.IGNORECASE))
        object.__setattr__(self, "_names", names)

    @classmethod
    def from_manifest(
        cls,
        bottle_dlp: Mapping[str, Any] | None,
        route_dlp: Mapping[str, Any] | None,
        known_secrets: Mapping[str, str | bytes],
    ) -> DlpSettings:
        """The route's settings: ``route_dlp`` overrides ``bottle_dlp`` key by key.

        ``known_secrets`` maps a name for the logs (an environment variable, a route's
        credential) to its value; values shorter than :data:`MIN_SECRET_LEN` bytes
        are left out and named in :attr:`ignored_secrets`.
        """
        layers = [d for d in (route_dlp, bottle_dlp) if d is not None]
        for layer in layers:
            extra = set(layer) - {"outbound_detectors", "inbound_detectors", "outbound_on_match"}
            if extra:
                raise DlpConfigError(f"dlp: unknown key(s) {', '.join(sorted(extra))}")

        def pick(key: str) -> object:
            for layer in layers:
                if key in layer:
                    return layer[key]
            return None

        outbound = pick("outbound_detectors")
        inbound = pick("inbound_detectors")
        on_match = pick("outbound_on_match")
        used: dict[bytes, str] = {}
        ignored: list[str] = []
        for name, raw in sorted(known_secrets.items()):
            value = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
            if len(value) < MIN_SECRET_LEN:
                ignored.append(name)
            else:
                used.setdefault(value, name)
        return cls(
            outbound=DEFAULT_OUTBOUND
            if outbound is None
            else _detector_set(outbound, OUTBOUND_DETECTORS, "outbound_detectors"),
            inbound=DEFAULT_INBOUND
            if inbound is None
            else _detector_set(inbound, INBOUND_DETECTORS, "inbound_detectors"),
            on_match=DEFAULT_ON_MATCH if on_match is None else str(on_match),
            secrets=tuple((name, value) for value, name in used.items()),
            ignored_secrets=tuple(ignored),
        )

    @property
    def scans_outbound(self) -> bool:
        """True when any outbound detector is on (otherwise nothing is scanned)."""
        return bool(self.outbound - ({KNOWN_SECRETS} if not self.secrets else set()))


# --------------------------------------------------------------------------- decoding


class _Budget:
    def __init__(self) -> None:
        self.left = SCAN_BUDGET

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _UndecodableError("budget", f"over {SCAN_BUDGET} bytes of decoded layers")


def _inflate(data: bytes, wbits: int, what: str, *, partial: bool = False) -> bytes:
    """``data`` decompressed by zlib (``wbits`` chooses gzip/zlib/raw), capped.

    Over :data:`MAX_INFLATED` bytes of output always raises. A corrupt or truncated
    stream raises too, unless ``partial`` (a stream found inside a layer, which may be
    random bytes that only look like one): then the output so far is the answer.
    """
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits)
        try:
            while not d.eof:
                chunk = d.decompress(rest, MAX_INFLATED + 1 - size)
                out.append(chunk)
                size += len(chunk)
                if size > MAX_INFLATED:
                    over = f"{what} inflates over {MAX_INFLATED} bytes"
                    raise _UndecodableError("too-large", over)
                if not chunk and d.unconsumed_tail == rest:
                    break  # needs more input than there is
                rest = d.unconsumed_tail
            if not d.eof:
                raise zlib.error("truncated")
        except zlib.error as exc:
            if partial:
                return b"".join(out)
            raise _UndecodableError("bad-encoding", f"{what}: {exc}") from None
        # gzip allows members one after another; anything else after the end is junk
        rest = d.unused_data
        if rest and wbits < 16:
            if partial:
                break
            raise _UndecodableError("bad-encoding", f"{what}: data after the end")
    return b"".join(out)


def _maybe_inflated(data: bytes) -> bytes | None:
    """The output of a gzip or zlib stream ``data`` starts with, if it does."""
    if data[:2] == b"\x1f\x8b":
        return _inflate(data, 16 + zlib.MAX_WBITS, "embedded gzip", partial=True) or None
    if len(data) > 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        return _inflate(data, zlib.MAX_WBITS, "embedded zlib", partial=True) or None
    return None


def _with_inflated(parts: list[bytes]) -> bytes | None:
    """``parts`` joined by new lines, each followed by what it inflates to."""
    out: list[bytes] = []
    for part in parts:
        out.append(part)
        inflated = _maybe_inflated(part)
        if inflated:
            out.append(inflated)
    return b"\n".join(out) if out else None


def _unbrotli(data: bytes) -> bytes:
    try:
        brotli: Any = importlib.import_module("brotli")
    except ImportError:
        raise _UndecodableError("no-brotli", "br body, brotli is not installed") from None
    decoder = brotli.Decompressor()
    if not hasattr(decoder, "can_accept_more_data"):
        raise _UndecodableError("no-brotli", "br body, brotli cannot cap its output (< 1.2)")
    out: list[bytes] = []
    size = 0
    pending = data
    try:
        while not decoder.is_finished():
            feed = b""
            if decoder.can_accept_more_data():
                if not pending:
                    raise _UndecodableError("bad-encoding", "br: truncated")
                feed, pending = pending, b""
            chunk = decoder.process(feed, output_buffer_limit=MAX_INFLATED + 1 - size)
            out.append(chunk)
            size += len(chunk)
            if size > MAX_INFLATED:
                raise _UndecodableError("too-large", f"br inflates over {MAX_INFLATED} bytes")
    except brotli.error as exc:
        raise _UndecodableError("bad-encoding", f"br: {exc}") from None
    if pending:
        raise _UndecodableError("bad-encoding", "br: data after the end")
    return b"".join(out)


def decode_content(body: bytes, content_encoding: str | None) -> bytes:
    """``body`` without its content codings (last applied first), capped.

    Raises :class:`_UndecodableError` (internal) on anything it cannot decode; callers use
    :func:`scan_request`, which turns that into a finding.
    """
    if len(body) > MAX_BODY:
        raise _UndecodableError("too-large", f"body of {len(body)} bytes (cap {MAX_BODY})")
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, coding)
        elif coding == "deflate":
            # RFC 9110 says zlib format; some clients send raw deflate
            try:
                body = _inflate(body, zlib.MAX_WBITS, coding)
            except _UndecodableError as exc:
                if exc.rule == "too-large":
                    raise
                body = _inflate(body, -zlib.MAX_WBITS, coding)
        elif coding == "br":
            body = _unbrotli(body)
        else:
            raise _UndecodableError("bad-encoding", f"unknown content coding {coding[:32]!r}")
    return body


_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{12,}={0,2}(?:\r?\n[A-Za-z0-9+/_-]+={0,2})*")
_HEX_RUN = re.compile(rb"[0-9A-Fa-f]{16,}")
_FORM = re.compile(rb"[^=&\s]+=[^&\s]*(?:&[^=&\s]+=[^&\s]*)*")
_WS = re.compile(rb"[\r\n]")


def _percent_layer(data: bytes) -> bytes | None:
    """Every round of percent-decoding ``data`` (a value may itself hold ``%XX``)."""
    if not _PERCENT.search(data):
        return None
    rounds: list[bytes] = []
    for _ in range(MAX_PERCENT_ROUNDS):
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        rounds.append(decoded)
        data = decoded
        if not _PERCENT.search(data):
            break
    else:
        raise _UndecodableError("percent-depth", f"percent-encoded over {MAX_PERCENT_ROUNDS} times")
    return b"\n".join(rounds) if rounds else None


def _b64_decode_run(run: bytes) -> Iterator[bytes]:
    """Every decoding of ``run``: each ``=``-terminated chunk at each alignment."""
    for chunk in re.split(rb"=+", _WS.sub(b"", run).translate(_FROM_URLSAFE)):
        for align in range(4):
            part = chunk[align:]
            part = part[: len(part) - (len(part) % 4 == 1)]
            if len(part) < MIN_SECRET_LEN:
                continue
            try:
                yield binascii.a2b_base64(part + b"=" * (-len(part) % 4), strict_mode=False)
            except binascii.Error:
                continue


def _b64_layer(data: bytes) -> bytes | None:
    return _with_inflated([d for m in _B64_RUN.finditer(data) for d in _b64_decode_run(m[0])])


def _hex_layer(data: bytes) -> bytes | None:
    out: list[bytes] = []
    for m in _HEX_RUN.finditer(data):
        run = m[0]
        for align in (0, 1):
            part = run[align : len(run) - ((len(run) - align) % 2)]
            out.append(bytes.fromhex(part.decode("ascii")))
    return _with_inflated(out)


def _json_strings(value: object, out: list[str]) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _json_layer(data: bytes) -> bytes | None:
    head = data.lstrip()[:1]
    if head not in (b"{", b"[", b'"'):
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    out: list[str] = []
    _json_strings(value, out)
    return "\n".join(out).encode("utf-8", "surrogatepass") if out else None


def _form_layer(data: bytes) -> bytes | None:
    if not _FORM.fullmatch(data.strip()):
        return None
    fields = parse_qsl(data.strip().decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return "\n".join(f"{k}\n{v}" for k, v in fields).encode("latin-1")


def _multipart_layer(data: bytes, content_type: str) -> bytes | None:
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + data
    )
    if not message.is_multipart():
        return None
    out: list[bytes] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out.append(payload)
    return _with_inflated(out)


def _charset(content_type: str | None) -> str | None:
    m = re.search(r"charset=\"?([A-Za-z0-9_-]+)", content_type or "")
    return m[1].lower() if m else None


def _wide_text_layer(data: bytes, charset: str | None) -> bytes | None:
    codec = None
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        codec = "utf-32"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"
    elif charset and charset.startswith(("utf-16", "utf-32")):
        codec = charset
    if codec is None:
        return None
    try:
        return data.decode(codec, "replace").encode("utf-8")
    except LookupError:
        return None


def _children(data: bytes, content_type: str | None) -> Iterator[tuple[str, bytes | None]]:
    yield "percent", _percent_layer(data)
    yield "base64", _b64_layer(data)
    yield "hex", _hex_layer(data)
    yield "json", _json_layer(data)
    yield "form", _form_layer(data)
    ctype = (content_type or "").lower()
    if ctype.startswith("multipart/"):
        yield "multipart", _multipart_layer(data, content_type or "")
    yield "text", _wide_text_layer(data, _charset(content_type))
    yield "inflate", _maybe_inflated(data)


def _layers(data: bytes, content_type: str | None, budget: _Budget) -> Iterator[tuple[str, bytes]]:
    """``data`` and every layer decoded from it (breadth first, deduplicated)."""
    seen = {data}
    frontier = [("raw", data)]
    depth = 0
    while frontier:
        yield from frontier
        if depth == MAX_DEPTH:
            return
        nxt: list[tuple[str, bytes]] = []
        for path, layer in frontier:
            for name, child in _children(layer, content_type if depth == 0 else None):
                if child is None or child in seen:
                    continue
                budget.take(len(child))
                seen.add(child)
                nxt.append((f"{path}>{name}", child))
        frontier = nxt
        depth += 1


# --------------------------------------------------------------------------- detectors

#: A stretch of the token alphabet ('=' included) long enough to be a token.
_ENTROPY_STRETCH = re.compile(rb"[A-Za-z0-9+/_=-]{%d,}" % ENTROPY_MIN_RUN)
_ENTROPY_RUN = re.compile(rb"[A-Za-z0-9+/_-]{%d,}" % ENTROPY_MIN_RUN)
#: The stretch continues on the next (previous) line: base64 wrapped at 64/76 columns.
_WRAPPED_AFTER = re.compile(rb"\r?\n[A-Za-z0-9+/_=-]{%d}" % ENTROPY_MIN_RUN)
_WRAPPED_BEFORE = re.compile(rb"[A-Za-z0-9+/_=-]{%d}\r?\n$" % ENTROPY_MIN_RUN)
_HOST_RUN = re.compile(rb"[a-z0-9]+")


def shannon_entropy(data: bytes) -> float:
    """Bits per symbol of ``data`` (0 for empty input)."""
    n = len(data)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


@functools.lru_cache(maxsize=512)
def expected_entropy(length: int, symbols: int) -> float:
    """Expected Shannon entropy (bits per symbol) of ``length`` uniform random draws.

    Exact: each symbol's count is Binomial(length, 1/symbols).
    """
    p = 1 / symbols
    return -symbols * sum(
        math.comb(length, c) * p**c * (1 - p) ** (length - c) * (c / length) * math.log2(c / length)
        for c in range(1, length + 1)
    )


def _classes(run: bytes) -> int:
    return sum(
        any(lo <= b <= hi for b in run) for lo, hi in ((0x41, 0x5A), (0x61, 0x7A), (0x30, 0x39))
    )


def _entropy_runs(data: bytes) -> Iterator[tuple[int, int, float]]:
    """(start, end, bits) of each token-like run of ``data`` entropy flags."""
    for stretch in _ENTROPY_STRETCH.finditer(data):
        start, end = stretch.span()
        if end - start > ENTROPY_MAX_RUN:
            continue  # a data blob (an image, a file), not a token
        if _WRAPPED_AFTER.match(data, end) or _WRAPPED_BEFORE.search(
            data[max(0, start - ENTROPY_MIN_RUN - 2) : start]
        ):
            continue  # one line of a wrapped blob
        for m in _ENTROPY_RUN.finditer(stretch[0]):
            run = m[0]
            if _classes(run) < 3:
                continue
            bits = shannon_entropy(run)
            if bits >= ENTROPY_RATIO * expected_entropy(len(run), 62):
                yield start + m.start(), start + m.end(), bits


def _entropy_hit(data: bytes) -> tuple[int, float] | None:
    for start, end, bits in _entropy_runs(data):
        return end - start, bits
    return None


def _host_entropy_hit(data: bytes) -> tuple[int, float] | None:
    for m in _HOST_RUN.finditer(data.lower()):
        run = m[0]
        if len(run) < HOST_ENTROPY_MIN_RUN or run.isdigit() or run.isalpha():
            continue
        bits = shannon_entropy(run)
        if bits >= HOST_ENTROPY_RATIO * math.log2(min(len(run), 36)):
            return len(run), bits
    return None


def _detect(
    settings: DlpSettings, detector: str, data: bytes, surface: str, path: str, *, host: bool
) -> Finding | None:
    known = settings._known_ci if host else settings._known
    if detector == KNOWN_SECRETS and known is not None:
        m = known.search(data)
        if m:
            name = settings._names.get(m[0]) or _name_ci(settings, m[0])
            size = next((len(v) for n, v in settings.secrets if n == name), len(m[0]))
            return Finding(KNOWN_SECRETS, surface, name, f"{name}({size} chars)", path)
    if detector == TOKEN_PATTERNS:
        for tp in TOKEN_PATTERNS_TABLE:
            m = tp.regex.search(data)
            if m:
                shown = m[0][: tp.prefix].decode("ascii", "replace")
                preview = f"{shown}…({len(m[0])} chars)"
                return Finding(TOKEN_PATTERNS, surface, tp.rule, preview, path)
    if detector == ENTROPY:
        hit = _host_entropy_hit(data) if host else _entropy_hit(data)
        if hit:
            return Finding(ENTROPY, surface, ENTROPY, f"…({hit[0]} chars, {hit[1]:.2f} bits)", path)
    return None


def _name_ci(settings: DlpSettings, match: bytes) -> str:
    lowered = match.lower()
    for form, name in settings._names.items():
        if form.lower() == lowered:
            return name
    return KNOWN_SECRETS


def _scan_bytes(
    settings: DlpSettings,
    data: Sequence[bytes],
    surface: str,
    content_type: str | None,
    budget: _Budget,
    *,
    host: bool = False,
) -> Finding | None:
    """The first finding in ``data`` and its layers: each detector over all layers."""
    layers = [layer for item in data for layer in _layers(item, content_type, budget)]
    for detector in (KNOWN_SECRETS, TOKEN_PATTERNS, ENTROPY):
        if detector not in settings.outbound:
            continue
        for path, layer in layers:
            finding = _detect(settings, detector, layer, surface, path, host=host)
            if finding:
                return finding
    return None


def _undecodable(surface: str, exc: _UndecodableError) -> Finding:
    return Finding(UNDECODABLE, surface, exc.rule, exc.preview)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


HeaderFields = Sequence[tuple[str | bytes, str | bytes]]

# --------------------------------------------------------------------------- scans


def scan_request(
    settings: DlpSettings,
    url: str,
    headers: HeaderFields,
    body: bytes,
    *,
    content_encoding: str | None = None,
    content_type: str | None = None,
) -> Finding | None:
    """The first finding in an outbound request, or None.

    ``url`` is the request target as sent (path and query at least); ``headers`` the
    header fields as sent, before the proxy injects credentials; ``body`` the raw body,
    still in its ``content_encoding``.
    """
    if not settings.scans_outbound:
        return None
    budget = _Budget()
    surface = "url"
    try:
        finding = _scan_bytes(settings, [_as_bytes(url)], surface, None, budget)
        if finding:
            return finding
        for name, value in headers:
            surface = "header:" + _as_bytes(name).decode("latin-1").lower()
            line = _as_bytes(name) + b": " + _as_bytes(value)
            finding = _scan_bytes(settings, [line], surface, None, budget)
            if finding:
                return finding
        surface = "body"
        if not body:
            return None
        return _scan_bytes(
            settings, [decode_content(body, content_encoding)], surface, content_type, budget
        )
    except _UndecodableError as exc:
        return _undecodable(surface, exc)


def scan_message(settings: DlpSettings, data: str | bytes) -> Finding | None:
    """The first finding in one outbound WebSocket message (text or binary), or None."""
    if not settings.scans_outbound:
        return None
    raw = _as_bytes(data)
    try:
        if len(raw) > MAX_BODY:
            raise _UndecodableError("too-large", f"message of {len(raw)} bytes (cap {MAX_BODY})")
        return _scan_bytes(settings, [raw], "websocket", None, _Budget())
    except _UndecodableError as exc:
        return _undecodable("websocket", exc)


def _base32_layer(data: bytes) -> bytes | None:
    out: list[bytes] = []
    for m in re.finditer(rb"[a-z2-7]{16,}", data):
        run = m[0].upper()
        for align in range(8):
            part = run[align:]
            part = part[: len(part) - len(part) % 8]
            if len(part) >= 16:
                try:
                    out.append(base64.b32decode(part))
                except binascii.Error:
                    continue
    return b"\n".join(out) if out else None


def scan_host(settings: DlpSettings, below: str | None) -> Finding | None:
    """A finding in ``below``, the labels of a host name the agent chose: those below
    the widest wildcard zone it is under, as the policy compiler gives them
    (``_policy.chosen_labels``; None for an exact route's name). The labels
    are scanned one by one and joined (without dots: a value split across labels),
    plain, hex- and base32-decoded, then through the usual layers; known secrets
    compare without regard to case.
    """
    if not settings.scans_outbound:
        return None
    if not below:
        return None
    labels = below.encode("ascii", "replace")
    budget = _Budget()
    candidates = [labels, labels.replace(b".", b"")]
    extra: list[bytes] = []
    for c in candidates:
        for decoded in (_hex_layer(c), _base32_layer(c)):
            if decoded:
                extra.append(decoded)
    try:
        return _scan_bytes(settings, candidates + extra, "host", None, budget, host=True)
    except _UndecodableError as exc:
        return _undecodable("host", exc)


# --------------------------------------------------------------------------- actions


def outcome(settings: DlpSettings, finding: Finding) -> Outcome:
    """The proxy's answer to ``finding`` (redact: :func:`redact_request` first)."""
    if finding.detector == UNDECODABLE:
        return Outcome("block", 403, REASON_UNDECODABLE)
    if settings.on_match == "supervise":
        return Outcome("supervise", 403, REASON_SUPERVISE)
    if settings.on_match == "redact" and finding.surface != "host":
        return Outcome("redact", 0, "")
    return Outcome("block", 403, REASON_BLOCKED)


def _redact_bytes(settings: DlpSettings, data: bytes) -> bytes:
    if KNOWN_SECRETS in settings.outbound and settings._known is not None:
        data = settings._known.sub(REDACTION, data)
    if TOKEN_PATTERNS in settings.outbound:
        for tp in TOKEN_PATTERNS_TABLE:
            data = tp.regex.sub(REDACTION, data)
    if ENTROPY in settings.outbound:
        for start, end, _bits in reversed(list(_entropy_runs(data))):
            data = data[:start] + REDACTION + data[end:]
    return data


def redact_request(
    settings: DlpSettings,
    url: str,
    headers: HeaderFields,
    body: bytes,
    *,
    content_encoding: str | None = None,
    content_type: str | None = None,
) -> RedactedRequest | None:
    """The request with every match replaced, or None when that is not enough.

    None (block it, :data:`REASON_UNREDACTABLE`) when the redacted request still has a
    finding, e.g. a value only visible after decoding, or when it cannot be decoded.
    """
    try:
        decoded = decode_content(body, content_encoding) if body else body
    except _UndecodableError:
        return None
    new_url = _redact_bytes(settings, _as_bytes(url)).decode("utf-8", "surrogateescape")
    new_body = _redact_bytes(settings, decoded)
    body_changed = new_body != decoded
    new_headers: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        bname = _as_bytes(name)
        lname = bname.lower()
        if body_changed and lname in (b"content-encoding", b"content-length"):
            continue
        line = _redact_bytes(settings, bname + b": " + _as_bytes(value))
        if not line.startswith(bname + b": "):
            return None  # the match was in the header's name
        new_headers.append((bname, line[len(bname) + 2 :]))
    result = RedactedRequest(new_url, tuple(new_headers), new_body if body_changed else body)
    again = scan_request(
        settings,
        result.url,
        result.headers,
        result.body,
        content_encoding=None if body_changed else content_encoding,
        content_type=content_type,
    )
    return None if again else result


def redact_message(settings: DlpSettings, data: str | bytes) -> bytes | None:
    """A WebSocket message with every match replaced, or None (block it)."""
    redacted = _redact_bytes(settings, _as_bytes(data))
    return None if scan_message(settings, redacted) else redacted


# --------------------------------------------------------------------------- inbound

#: Naive by name: phrases prompt injections commonly use, matched case-insensitively
#: on the decoded text with runs of white space folded.
INJECTION_PATTERNS: Final[tuple[tuple[str, re.Pattern[bytes]], ...]] = tuple(
    (rule, re.compile(rx, re.IGNORECASE))
    for rule, rx in (
        (
            "ignore-instructions",
            rb"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
            rb"(?:previous|prior|above|earlier|preceding|system|original)\s+"
            rb"(?:instructions|prompts?|directions|rules|context)",
        ),
        ("new-instructions", rb"\b(?:new|updated|real)\s+(?:system\s+)?instructions\s*:"),
        ("role-override", rb"\byou\s+are\s+now\s+(?:a|an|in|the|my)\b"),
        (
            "system-prompt-leak",
            rb"\b(?:reveal|print|repeat|show)\s+(?:your\s+|the\s+)?system\s+prompt",
        ),
        ("chat-template", rb"<\|im_start\|>|<\|system\|>|\[/?INST\]|<<SYS>>"),
        ("fake-turn", rb"(?:^|\n)\s*(?:Human|Assistant|System)\s*:\s*\S"),
        (
            "exfil-request",
            rb"\b(?:send|post|upload|exfiltrate)\s+(?:the\s+|all\s+|your\s+)*"
            rb"(?:api\s+keys?|credentials|secrets|tokens|env(?:ironment)?\s+variables)\s+to\b",
        ),
    )
)
_FOLD = re.compile(rb"[ \t\f\v]+")


def scan_response(
    settings: DlpSettings,
    body: bytes,
    content_encoding: str | None = None,
    content_type: str | None = None,
) -> Finding | None:
    """A ``naive_injection_detection`` finding in a response body, or None.

    Reads the first :data:`MAX_INBOUND` bytes after the content coding (a larger
    response is only partly read: the detector only flags); the proxy adds
    :data:`INJECTION_HEADER` and logs. An undecodable body is flagged.
    """
    if NAIVE_INJECTION not in settings.inbound or not body:
        return None
    try:
        text = decode_content(body[:MAX_BODY], content_encoding)[:MAX_INBOUND]
    except _UndecodableError as exc:
        return Finding(NAIVE_INJECTION, "response", UNDECODABLE, exc.preview)
    layers = [text]
    for extra in (_json_layer(text), _wide_text_layer(text, _charset(content_type))):
        if extra:
            layers.append(extra)
    for layer in layers:
        folded = _FOLD.sub(b" ", layer)
        for rule, rx in INJECTION_PATTERNS:
            m = rx.search(folded)
            if m:
                return Finding(NAIVE_INJECTION, "response", rule, f"{rule}({len(m[0])} chars)")
    return None
