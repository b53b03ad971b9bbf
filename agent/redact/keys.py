"""Which key names mark a secret, and which values are never secrets.

A name is cut into words (at `_`, `-`, `.`, digits and camelCase humps: `keyStorePassword`
is key, store, password). A secret word counts when it ends the name or is followed by a
separator or digit, not by a camelCase hump (`PassEnvironment`, `KeyringMode` are not
secrets), except before `Id`, `Value`, `Data`, `Hash` (`accessKeyId`, `sessionId`).

Strong words (password, secret, token, api key, ...) redact any value that is not benign.
WEAK words (a bare `key`, `*_key`, `session`, `salt`) redact only values that look secret
(long, mixed characters): `key: app` (a Kubernetes label) stays. Names whose words end in
a non-secret suffix (`token_expiry`, `password_min_length`, `secret_key_file`) or hold a
non-secret prefix (`public_key`, `use_base64_secret`, `existingSecret`) are exempt.

Decisions a reviewer should know:
- `pin` is not a secret word (`pin_memory`, `pinned`; PINs are numbers, which are benign).
- `salt` is a WEAK word (SaltStack's `salt: master` stays; WordPress salts go).
- `changeme`, `password`, `secret` as values ARE redacted: they are real (weak) passwords.
- `*_key_id` / `key_id` are WEAK (a UUID or ARN stays, an AWS `AKIA...` id goes); an
  `access_key_id` or `session_id` is strong.
- A UUID is benign only for WEAK names: under `api_key:` or `session_id:` it is the secret.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from snapshot_agent.redact.rule import REDACTED_PREFIX


@dataclass(frozen=True, slots=True)
class SecretKind:
    """What a secret name holds: the replacement's label, and whether the word is WEAK."""

    label: str
    weak: bool = False


#: One word of a name -> its label. A word not here never marks a secret by itself.
_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("password", "passwd", "pwd", "pw", "pass", "passphrase", "passcode", "pgpassword"),
        "password",
    ),
    **dict.fromkeys(("secret", "secrets", "clientsecret"), "secret"),
    **dict.fromkeys(
        (
            "token",
            "tokens",
            "accesstoken",
            "refreshtoken",
            "authtoken",
            "apitoken",
            "bearer",
            "bearertoken",
            "idtoken",
        ),
        "token",
    ),
    **dict.fromkeys(("apikey", "apikeys"), "api-key"),
    "accesskey": "access-key",
    "secretkey": "secret-key",
    "privatekey": "private-key",
    **dict.fromkeys(("credential", "credentials", "creds"), "credential"),
    **dict.fromkeys(("auth", "authorization"), "auth"),
    **dict.fromkeys(("sessionid", "sessionkey", "sessiontoken"), "session"),
    **dict.fromkeys(("cookie", "cookies"), "cookie"),
}
#: WEAK words: the value must look secret too.
_WEAK_WORDS: dict[str, str] = {"key": "key", "keys": "key", "session": "session", "salt": "salt"}
#: A word before `key` that makes it strong, and the label then (first found wins).
KEY_QUALIFIERS: dict[str, str] = {
    "private": "private-key",
    "secret": "secret-key",
    "encryption": "encryption-key",
    "api": "api-key",
    "access": "access-key",
    "session": "session",
    "master": "key",
    "signing": "key",
    "hmac": "key",
    "jwt": "key",
    "auth": "key",
    "aes": "key",
    "cipher": "key",
    "crypt": "key",
}
#: A word after `session` that makes it a strong session secret.
_SESSION_SECRETS = frozenset({"id", "key", "token", "cookie", "secret"})
#: A camelCase word that may follow a secret word (`accessKeyId`): not a new concept.
_CONTINUATIONS = frozenset({"id", "value", "data", "hash", "base64", "b64"})
#: A word after the (last) secret word that says the value is about the secret, not it.
EXEMPT_SUFFIXES = frozenset(
    [
        "expiry",
        "expiration",
        "expires",
        "expire",
        "expired",
        "lifetime",
        "age",
        "ttl",
        "timeout",
        "interval",
        "length",
        "len",
        "min",
        "max",
        "size",
        "count",
        "limit",
        "retries",
        "attempts",
        "days",
        "warn",
        "file",
        "files",
        "path",
        "paths",
        "dir",
        "directory",
        "location",
        "mount",
        "enabled",
        "enable",
        "disabled",
        "required",
        "algorithm",
        "alg",
        "type",
        "kind",
        "mode",
        "method",
        "format",
        "version",
        "policy",
        "provider",
        "backend",
        "strategy",
        "scheme",
        "plugin",
        "module",
        "class",
        "handler",
        "template",
        "name",
        "names",
        "label",
        "labels",
        "field",
        "header",
        "prefix",
        "suffix",
        "env",
        "var",
        "ref",
        "source",
        "url",
        "uri",
        "endpoint",
        "host",
        "hostname",
        "port",
        "server",
        "domain",
        "realm",
        "issuer",
        "audience",
        "scope",
        "user",
        "username",
        "login",
        "command",
        "cmd",
        "regex",
        "pattern",
        "rotation",
        "cache",
        "secure",
        "samesite",
        "httponly",
        "encoding",
        "charset",
        "level",
        "bits",
        "usage",
        "hint",
    ]
)
#: A word before the secret word that says the value is not the secret.
EXEMPT_PREFIXES = frozenset(
    [
        "public",
        "publishable",
        "use",
        "existing",
        "max",
        "min",
        "num",
        "enable",
        "enabled",
        "disable",
        "require",
        "required",
        "allow",
        "is",
        "has",
        "no",
        "skip",
        "without",
    ]
)
#: A camelCase-aware cut of a name into words.
_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
#: nsswitch.conf (`passwd: files systemd`): service names are not passwords.
_NSSWITCH = re.compile(
    r"(?:files|systemd|compat|nis|nisplus|ldap|sss|db|winbind|dns|myhostname|mymachines"
    r"|resolve|extrausers|cache|usrfiles|altfiles|\[[!A-Za-z=\s]{1,64}\]|\s){1,32}"
)
MAX_NAME = 128


def _words(name: str) -> list[tuple[str, bool]]:
    """(lower-case word, whether it starts at a camelCase hump) for each word of `name`."""
    out = []
    for match in _WORD_RE.finditer(name):
        start = match.start()
        hump = start > 0 and name[start - 1].isalpha() and match.group()[0].isalpha()
        out.append((match.group().lower(), hump))
    return out


class SecretKeys:
    """The secret words (built in, plus `redaction.extra_keys`) and what names they mark."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.extra: tuple[tuple[str, ...], ...] = tuple(
            tuple(w for w, _ in _words(e)) for e in extra if _words(e)
        )
        self.extra_names = frozenset(e.lower() for e in extra)
        extra_hints = {max(words, key=len) for words in self.extra}
        self.hints: tuple[str, ...] = tuple(
            sorted(
                {"pass", "pw", "secret", "token", "key", "auth", "cred", "session", "cookie"}
                | {"bearer", "salt"}
                | extra_hints
            )
        )
        self._cache: dict[str, SecretKind | None] = {}
        self._exempt: dict[str, bool] = {}

    def label(self, name: str) -> str | None:
        """The replacement's label for a value of `name`, or None: not a secret name."""
        kind = self.kind(name)
        return kind.label if kind else None

    def secret_label(self, name: str, value: str) -> str | None:
        """The label when `value`, held under `name` (a JSON field), is a secret, else None.

        Benign values (numbers, paths, durations...) and, under a WEAK name, values that
        do not look generated are not secrets; nor is a value already redacted.
        """
        kind = self.kind(name)
        text = value.strip()
        if kind is None or not text or text.startswith(REDACTED_PREFIX) or text == "***":
            return None
        if is_benign_for(name, text) or (kind.weak and not looks_secret(text)):
            return None
        return kind.label

    def kind(self, name: str) -> SecretKind | None:
        """What `name` marks (label, WEAK or not), or None when it is not a secret name."""
        if name in self._cache:
            return self._cache[name]
        kind = self._classify(name) if len(name) <= MAX_NAME else None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[name] = kind
        return kind

    def exempt(self, name: str) -> bool:
        """Whether `name` says its value is about a secret, not one (`*_path`, `public_*`)."""
        if name not in self._exempt:
            if len(self._exempt) > 4096:
                self._exempt.clear()
            self._exempt[name] = self._is_exempt(name)
        return self._exempt[name]

    def _is_exempt(self, name: str) -> bool:
        """`exempt`, uncached."""
        words = [w for w, _ in _words(name)]
        return bool(words) and (
            words[-1] in EXEMPT_SUFFIXES or any(w in EXEMPT_PREFIXES for w in words)
        )

    def _classify(self, name: str) -> SecretKind | None:
        """The kind of `name` (uncached)."""
        words = _words(name)
        if not words:
            return None
        lower = [w for w, _ in words]
        if name.lower().lstrip("-") in self.extra_names:
            return SecretKind(_kebab(lower))
        found = self._last_match(words)
        if found is None:
            return None
        at, kind = found
        if any(w in EXEMPT_SUFFIXES for w in lower[at + 1 :]) or any(
            w in EXEMPT_PREFIXES for w in lower[:at]
        ):
            return None
        return kind

    def _last_match(self, words: list[tuple[str, bool]]) -> tuple[int, SecretKind] | None:
        """(index, kind) of the last secret word of the name, strong words preferred."""
        lower = [w for w, _ in words]
        best: tuple[int, SecretKind] | None = None
        for at in range(len(words)):
            if not _ends_word(words, at):
                continue
            kind = self._word_kind(lower, at)
            if kind is not None and (best is None or not kind.weak or best[1].weak):
                best = (at, kind)
        return best

    def _word_kind(self, lower: list[str], at: int) -> SecretKind | None:
        """The kind the word at `at` gives the name, or None."""
        word = lower[at]
        for extra in self.extra:
            if tuple(lower[at - len(extra) + 1 : at + 1]) == extra:
                return SecretKind(_kebab(list(extra)))
        before = lower[max(0, at - 2) : at]
        if word == "secret" and before[-1:] == ["shared"]:
            return SecretKind("shared-secret")
        if word in ("key", "keys"):
            for qualifier, label in KEY_QUALIFIERS.items():
                if qualifier in before:
                    return SecretKind(label)
        if word == "session" and lower[at + 1 : at + 2] and lower[at + 1] in _SESSION_SECRETS:
            return SecretKind("session")
        if word in ("id", "cookie", "token") and at and lower[at - 1] == "session":
            return SecretKind("session")
        if word in _WORDS:
            return SecretKind(_WORDS[word])
        if word in _WEAK_WORDS:
            return SecretKind(_WEAK_WORDS[word], weak=True)
        return None


# --- the prefilter's view of names (RE2 syntax, bytes read as Latin-1) ------------------

#: A character of a key name, as `[\w.\-]` takes it in the decoded line: any byte of a
#: non-ASCII character counts (RE2's `\w` is ASCII only).
GATE_NAME_CHAR = r"[0-9A-Za-z_.\-\x80-\xff]"
#: A name character that does not separate words.
_GATE_WORD_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_GATE_WORD_CHAR = r"[0-9A-Za-z\x80-\xff]"
#: The secret words whose names need a generated-looking value (the WEAK words).
GATE_WEAK_WORDS = ("key", "session", "salt")


def gate_name_rest(keep: Sequence[str] = ()) -> str:
    """RE2: the rest of a key name after a secret word, unless the name's last word is an
    exempt suffix written as one word (`_ttl`, `-TTL`, `.method`): such a name is never
    secret (`token_ttl`, `auth_method`), whatever came before. `keep`: suffix words that
    some `redaction.extra_keys` entry holds, so not exempt. Lower case only, as log and
    JSON keys mostly are (`TOKEN_TTL` is left to the rule: a larger automaton costs every
    process more to compile than the rule costs on such lines); `_tTL` would be cut into
    other words anyway.
    """
    last = _gate_none_of(sorted(w for w in EXEMPT_SUFFIXES if w not in keep))
    return rf"(?:{GATE_NAME_CHAR}*[_.\-](?-i:{last})|{_GATE_WORD_CHAR}*)"


def _gate_none_of(words: Sequence[str]) -> str:
    """RE2: a run of word characters (maximal: the caller says what follows) that is none
    of `words`, built as a trie: at each node, end (unless a word ends there), leave the
    trie by another character, or follow a branch."""
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def walk(node: dict[str, dict]) -> str:
        branches = sorted(c for c in node if c)
        parts = [] if "" in node else [""]
        parts.append(rf"[{_others(''.join(branches))}\x80-\xff]{_GATE_WORD_CHAR}*")
        parts += [re.escape(c) + walk(node[c]) for c in branches]
        return "(?:" + "|".join(parts) + ")"

    return walk(trie)


@functools.lru_cache(maxsize=256)
def _others(branches: str) -> str:
    """The word characters other than `branches`, as the ranges of a character class."""
    out: list[str] = []
    for char in (c for c in _GATE_WORD_CHARS if c not in branches):
        if out and ord(char) == ord(out[-1][-1]) + 1:
            out[-1] = out[-1][0] + char
        else:
            out.append(char)
    return "".join(run if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in out)


def _ends_word(words: list[tuple[str, bool]], at: int) -> bool:
    """Whether the word at `at` ends where a word may end: not before a camelCase hump."""
    if at + 1 == len(words):
        return True
    following, hump = words[at + 1]
    return not hump or following in _CONTINUATIONS


def _kebab(words: list[str]) -> str:
    """`words` joined with `-`: a label."""
    return "-".join(words) or "secret"


_NUMBER = re.compile(r"[-+]?(?:\d{1,12}(?:\.\d{1,12})?(?:[eE][-+]?\d{1,3})?|0[xX][0-9a-fA-F]{1,8})")
_WORDS_BENIGN = frozenset(
    [
        "null",
        "none",
        "nil",
        "~",
        "undefined",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "enabled",
        "disabled",
        "required",
        "optional",
        "auto",
    ]
)
_DURATION = re.compile(
    r"(?:\d{1,9}(?:\.\d{1,6})?[ \t]?(?:ns|us|µs|ms|s|secs?|seconds?|m|mins?|minutes?|h|hrs?"
    r"|hours?|d|days?|w|weeks?|y|years?)){1,6}|P(?:\d{1,9}[YMWD]){0,4}(?:T(?:\d{1,9}[HMS]){1,3})?",
    re.I,
)
_SIZE = re.compile(r"\d{1,12}(?:\.\d{1,6})?[ \t]?(?:[kmgtpe]i?b?|b|bytes?)", re.I)
_VERSION = re.compile(r"v?\d{1,6}(?:\.\d{1,6}){1,3}(?:[-+][\w.]{1,32})?")
_PATH = re.compile(r"(?:~|\.{1,2})?/[\w.@+~%:,=/-]{0,1024}|file://[^\s]{1,1024}")
_PLACEHOLDER = re.compile(
    r"\$\{[A-Za-z_][\w.]{0,128}(?::?\?[^}]{0,256})?\}"  # ${VAR}, ${VAR:?error}
    r"|\$[A-Za-z_]\w{0,128}"  # $VAR
    r"|\{\{[^{}]{0,256}\}\}"  # {{ template }}
    r"|<[\w .:/-]{1,64}>"  # <secret>, <your-token-here>
    r"|%\([\w.]{1,64}\)s|%[A-Z_][A-Z0-9_]{0,64}%"  # %(name)s, %VAR%
    r"|[xX]{3,64}|\*{3,64}|\.{3}|-|\?{1,8}"  # xxx, ****, ..., -, ?
    r"|\[?(?:redacted|hidden|masked|removed|filtered)\]?|\(hidden\)|<hidden>"
    r"|ENC\[[^\]]{1,8192}\]",  # a sops-encrypted value
    re.I,
)
_PUBLIC_KEY = re.compile(
    r"(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d{3}|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com)"
    r"[ \t]{1,8}AAAA[A-Za-z0-9+/]{8,8192}={0,3}(?:[ \t].{0,256})?"
)
_PUBLIC_PEM = re.compile(
    r"-----BEGIN (?:CERTIFICATE|PUBLIC KEY|RSA PUBLIC KEY|X509 CRL|CERTIFICATE REQUEST"
    r"|TRUSTED CERTIFICATE)-----"
)
UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_TOKENISH = re.compile(r"[A-Za-z0-9+/_\-]{16,8192}={0,3}")
_JWTISH = re.compile(r"[A-Za-z0-9_\-]{8,4096}(?:\.[A-Za-z0-9_\-]{8,4096}){1,2}")
_HEX = re.compile(r"[0-9a-fA-F]{16,8192}")
_WORDY = re.compile(r"[a-z]{2,32}(?:[_\-][a-z]{2,32}|[_\-]?v?\d{1,3}){1,16}")


#: A character of a key name, as the rules' name patterns (`[\w.\-]`) take it.
_NAME_CHAR = re.compile(r"[\w.\-]")


def name_start(line: str, at: int, reach: int) -> int:
    """Where the key name holding position `at` starts: back over word characters, `.`
    and `-`, at most `reach` characters."""
    start, floor = at, max(0, at - reach)
    while start > floor and _NAME_CHAR.match(line, start - 1):
        start -= 1
    return start


def is_benign_value(value: str) -> bool:
    """Whether `value` can never be a secret: a number, boolean, duration, size, path, ...

    Also placeholders (`${VAR}`, `{{ x }}`, `<secret>`, `****`), values already redacted
    and public keys or certificates.
    """
    text = value.strip()
    if not text or text.startswith(REDACTED_PREFIX) or text.lower() in _WORDS_BENIGN:
        return True
    return any(
        pattern.fullmatch(text)
        for pattern in (_NUMBER, _DURATION, _SIZE, _VERSION, _PLACEHOLDER, _PUBLIC_KEY)
    ) or bool(_PUBLIC_PEM.match(text) or _is_path(text))


def _is_path(text: str) -> bool:
    """Whether `text` is a file path or URL (whose parts do not look secret)."""
    if not _PATH.fullmatch(text):
        return False
    return not any(looks_secret(part) for part in text.split("/"))


def is_benign_for(name: str, value: str) -> bool:
    """Whether `value` is benign as the value of `name` (`passwd: files` in nsswitch.conf)."""
    return is_benign_value(value) or (
        name.lower() in ("passwd", "shadow", "gshadow") and bool(_NSSWITCH.fullmatch(value))
    )


def entropy(text: str) -> float:
    """Shannon entropy of `text`, in bits per character."""
    if not text:
        return 0.0
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


def looks_secret(value: str) -> bool:
    """Whether `value` looks like a generated secret: long, mixed, random-looking.

    What a WEAK name (`key`) needs: 16+ characters of base64 / hex / token alphabet with
    mixed character classes. UUIDs, words joined by `_` or `-`, and benign values do not.
    """
    text = value.strip()
    if len(text) < 16 or UUID.fullmatch(text) or _WORDY.fullmatch(text):
        return False
    if _HEX.fullmatch(text):
        return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)
    if not (_TOKENISH.fullmatch(text) or _JWTISH.fullmatch(text)):
        return False
    classes = sum(
        (
            any(c.islower() for c in text),
            any(c.isupper() for c in text),
            any(c.isdigit() for c in text),
        )
    )
    return classes >= 2 and entropy(text) >= 3.0
