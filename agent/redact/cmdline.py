"""Secrets handed to programs on their command line: `--password x`, `mysql -pX`, ….

Command lines turn up everywhere: process tables, unit files, shell history, logs, the
argv of every command a check ran. Two rules read them as text, line by line:

- `secret-option`: an option whose name marks a secret (`--password x`,
  `--password=x`, `-Dsome.password=x`, `--api-key "two words"`).
- `program-option`: short options that carry a password only for the programs that use
  them that way (`mysql -pX`, `redis-cli -a X`, `curl -u user:X`): the same options
  mean a port or a path elsewhere (`ssh -p 22`).

`secret_arguments` does the same for an argv list, where the option and its value are
two arguments that no text rule sees together.

Absolute paths are never values (`--key-file /etc/iggy/key.pem`), nor is an option
that follows (`--auth --verbose`: a flag). `NAME=value` assignments are not options:
the key/value rules catch those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from snapshot_agent.redact.rule import Hit, Rule
from snapshot_agent.redact.tokens import is_redacted

SECRET_OPTION = "secret-option"
PROGRAM_OPTION = "program-option"
SECRET_OPTION_LABEL = "cli-secret"
PROGRAM_OPTION_LABEL = "cli-password"

#: A word that marks a secret, as a whole word of a name: after a start, `_`, `-`, `.`,
#: a digit or a camelCase hump, and before an end or a non-letter. So `--password`,
#: `--api-key`, `keyStorePassword`, `--Auth-Token`, but not `--bypass` or `--monkey`.
_SECRET_WORD = (
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
    r"(?i:pass(?:word|wd|phrase)?|secrets?|tokens?|keys?|auth|credentials?"
    r"|api_?keys?|access_?keys?|auth_?tokens?|private_?keys?)"
    r"(?![A-Za-z])"
)
#: An option name that mentions a secret (bounded on both sides: linear time).
_NAME = rf"[A-Za-z0-9_.-]{{0,64}}?{_SECRET_WORD}[A-Za-z0-9_.-]{{0,64}}"
#: A value: quoted (the quotes stay out of the span; an unclosed quote runs to the end of
#: the line; `\"` as in JSON-escaped command lines counts as a quote), or a bare word
#: that stops at quotes and backslashes (never eats the end of a JSON string).
_VALUE = (
    r"(?:\\?(?P<q>[\"']))?(?!/)"
    r"(?P<value>(?(q)(?:(?!(?P=q))[^\\\n]){1,256}|[^\s\"'\\]{1,4096}+))"
)
#: `-` first, then "not after a word" (a look-behind over it): a literal first character
#: lets the regex engine skip to each `-` instead of trying every position.
_OPTION = re.compile(
    rf"-(?<![A-Za-z0-9_-].)-?(?P<name>{_NAME})(?:=|[ \t]{{1,64}}(?!--)(?P<spaced>)){_VALUE}"
)
_TRAILING_OPTION = re.compile(rf"-(?<![A-Za-z0-9_=-].)-?(?P<name>{_NAME})[ \t\\]{{0,8}}$")
_NEXT_VALUE = re.compile(rf"[ \t]{{0,64}}(?!--){_VALUE}")
_ARG_OPTION = re.compile(rf"-{{1,2}}(?P<name>{_NAME})")
_ARG_ASSIGNED = re.compile(rf"-{{1,2}}(?P<name>{_NAME})=(?!/)")

#: Last words of option names that hold no secret: a file, a length, a lifetime, an id.
BENIGN_LAST_WORDS = frozenset(
    [
        "file",
        "files",
        "path",
        "dir",
        "directory",
        "length",
        "len",
        "size",
        "timeout",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "id",
        "name",
        "type",
        "url",
        "env",
        "count",
        "algorithm",
        "alg",
        "format",
        "mode",
        "store",
        "stdin",
        "fd",
        "cmd",
        "required",
        "enabled",
        "disabled",
        "only",
        "optional",
        "method",
        "methods",
        "level",
        "header",
        "realm",
        "scheme",
        "provider",
        "policy",
        "port",
        "host",
        "endpoint",
        "user",
        "username",
        "interval",
        "retries",
    ]
)
#: First words of option names that are flags (they take no value when spaced).
FLAG_FIRST_WORDS = frozenset(
    [
        "no",
        "without",
        "skip",
        "disable",
        "enable",
        "use",
        "require",
        "allow",
        "ask",
        "prompt",
        "show",
        "print",
        "generate",
        "forget",
        "save",
        "insecure",
    ]
)


def _words(name: str) -> list[str]:
    """The lower-case words of an option name (`keyStore-passFile` -> key store pass file)."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name)
    return [w for w in re.split(r"[-_.]+", spaced.lower()) if w]


def _takes_secret(name: str, spaced: bool) -> bool:
    """Whether option `name` carries a secret (a spaced value: and is not a flag)."""
    words = _words(name)
    if not words or words[-1] in BENIGN_LAST_WORDS:
        return False
    return not (spaced and words[0] in FLAG_FIRST_WORDS)


@dataclass
class _OptionScanner:
    """Scans lines for secret options; a line ending in one opens for the next line's value.

    That carries `--password \\` continued on the next line, and NUL-separated
    `/proc/PID/cmdline` text, where each argument is a line of its own.
    """

    name: str
    hints: tuple[str, ...]
    label: str
    pending: bool = False
    #: Every line with a hit holds a dash that does not follow a word character or a dash
    #: (`_OPTION`'s look-behind: not `/personal-access-tokens`), then a name holding a
    #: secret word.
    gate = r"(?:^|[^A-Za-z0-9_\-])-[A-Za-z0-9_.\-]*(?:pass|secret|token|key|auth|credential)"

    @property
    def open(self) -> bool:
        """Whether the previous line ended with a secret option still owed its value."""
        return self.pending

    def scan(self, line: str) -> list[Hit]:
        """A hit for the value of each secret option in `line`."""
        hits: list[Hit] = []
        if self.pending:
            self.pending = False
            first = _NEXT_VALUE.match(line)
            if first is not None:
                self._add(line, first, hits)
        for match in _OPTION.finditer(line):
            if _takes_secret(match.group("name"), match.group("spaced") is not None):
                self._add(line, match, hits)
        # The next line is this option's value only where a command line goes on there:
        # after a trailing `\`, or when this line is the option alone (NUL-separated
        # /proc/PID/cmdline: one argument per line). A log line ending in `--auth-required`
        # says nothing about the next log line.
        tail = None
        stripped = line.strip(" \t")
        carries = stripped[-1:] == "\\" or not any(c in stripped for c in " \t")
        if carries and stripped.rstrip(" \t\\")[-1:].isalnum():
            tail = _TRAILING_OPTION.search(line, max(0, len(line) - 256))
        self.pending = tail is not None and _takes_secret(tail.group("name"), True)
        return hits

    def _add(self, line: str, match: re.Match[str], hits: list[Hit]) -> None:
        """A hit for the match's value, unless it already is a replacement."""
        start, end = match.span("value")
        if not is_redacted(line[start:end]):
            hits.append(Hit(start, end, self.name, self.label))


@dataclass(frozen=True)
class SecretOptionRule:
    """Options whose name marks a secret: `--password x`, `--token=x`, `-Dx.password=x`."""

    name: str = SECRET_OPTION
    description: str = (
        "Values of command-line options named like a secret (--password x, --api-key=x,"
        " -Djavax.net.ssl.keyStorePassword=x); paths, flags and *-file/*-ttl options stay."
    )
    label: str = SECRET_OPTION_LABEL
    hints: tuple[str, ...] = ("pass", "secret", "token", "key", "auth", "credential")
    examples: tuple[str, ...] = (
        "/usr/bin/app --password «hunter2» --Auth-Token=«abc» -v serve",
        "java -Djavax.net.ssl.keyStorePassword=«changeit» --api-KEY «k1» -jar a.jar",
        "tool --no-auth --verbose --credentials «-x9secret»",
        "agent: run --token «abc123» [main]",
        "mysql --password '«my secret»' -h db",
        '{"cmd": "sh -c \\"iggy --password \\"«two words»\\" topic list\\""}',
        "iggy --username iggy --password «ex7BWr2drgd1Qs» topic list",
        '--password=«ab»"cd',
    )
    benign: tuple[str, ...] = (
        "iggy --key-file /etc/iggy/key.pem",
        "tool --auth --verbose",
        "vault write --token-ttl 30m auth/x",
        "ssh -o PasswordAuthentication=no --bypass host",
        "app --password [REDACTED:cli-secret]",
        "app --password=***",
    )

    def scanner(self) -> _OptionScanner:
        """A fresh scanner (it may owe the next line a value)."""
        return _OptionScanner(self.name, self.hints, self.label)


# --- Short options that are passwords for some programs ---------------------------------

#: Programs whose options carry a password: (option, whether only its attached form
#: `-pVALUE` is one). mysql's `-p VALUE` prompts (VALUE is the database), so only
#: `-pVALUE` is a password there.
PROGRAM_SECRET_FLAGS: dict[str, tuple[tuple[str, bool], ...]] = {
    **dict.fromkeys(
        [
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlcheck",
            "mysqlshow",
            "mysqlpump",
            "mysqlsh",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
        ],
        (("-p", True),),
    ),
    **dict.fromkeys(
        ("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport"),
        (("-p", False),),
    ),
    **dict.fromkeys(
        [
            "ldapsearch",
            "ldapadd",
            "ldapmodify",
            "ldapdelete",
            "ldapwhoami",
            "ldappasswd",
            "ldapcompare",
            "ldapmodrdn",
            "ldapexop",
        ],
        (("-w", False),),
    ),
    **dict.fromkeys(("sqlcmd", "bcp"), (("-P", False),)),
    "redis-cli": (("-a", False),),
    "sshpass": (("-p", False),),
    "iggy": (("-p", False),),  # the Iggy CLI: -u USER -p PASSWORD
    "curl": (("-u", False), ("--user", False), ("--proxy-user", False), ("-U", False)),
    "smbclient": (("-U", False), ("--user", False)),
    "openssl": (("-passin", False), ("-passout", False), ("-pass", False), ("-k", False)),
    **dict.fromkeys(
        ("keytool", "jarsigner"),
        tuple(
            (flag, False)
            for flag in [
                "-storepass",
                "-keypass",
                "-srcstorepass",
                "-deststorepass",
                "-srckeypass",
                "-destkeypass",
            ]
        ),
    ),
}
#: Programs whose `login` subcommand takes `-p PASSWORD` (elsewhere -p is a port).
LOGIN_PROGRAMS = frozenset(
    ("docker", "podman", "buildah", "skopeo", "nerdctl", "helm", "oras", "crane")
)
#: What may surround a program's name in text: quotes (also JSON-escaped), brackets.
_AROUND_NAME = "'\"\\;,()[]`"
LOGIN_FLAGS: tuple[tuple[str, bool], ...] = (("-p", False),)
#: Words that end one command in a shell line: the next command has its own options.
SHELL_SEPARATORS = frozenset((";", "|", "||", "&&", "&", "|&"))


def _secret_span(value: str, program: str) -> tuple[int, int] | None:
    """The part of an option's value that is the password, or None if it holds none.

    curl's USER:PASSWORD: the part after ':' (the user when nothing follows ':', which is
    how API tokens are passed); smbclient's USER%PASSWORD; openssl's pass:PASSWORD
    (env:, file:, fd: and stdin name where it is, not what it is).
    """
    start, end = 0, len(value)
    if end >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        start, end = 1, end - 1
    inner = value[start:end]
    if program == "curl" and ":" in inner:
        user, password = inner.split(":", 1)
        return (start + len(user) + 1, end) if password else (start, start + len(user))
    if program == "smbclient":
        at = inner.find("%")
        return (start + at + 1, end) if at >= 0 else None
    if program == "openssl":
        return (start + 5, end) if inner.startswith("pass:") else None
    return (start, end) if inner else None


@dataclass
class _ProgramWalker:
    """Follows one command word by word: which program runs, which option awaits a value."""

    program: str = ""
    flags: tuple[tuple[str, bool], ...] = ()
    login: bool = False  # a LOGIN_PROGRAMS program, before its `login` word
    expect: bool = False  # the previous word was a password option

    @property
    def active(self) -> bool:
        """Whether a program with password options is running."""
        return bool(self.flags) or self.login

    def reset(self) -> None:
        """A new command starts."""
        self.program, self.flags, self.login, self.expect = "", (), False, False

    def word(self, word: str) -> tuple[int, int] | None:
        """The span of a password within `word`, the next word of the command, if any."""
        if word in SHELL_SEPARATORS:
            self.reset()
            return None
        if self.expect:
            self.expect = False
            return None if word.startswith("-") else self._found(word, 0)
        name = os.path.basename(word.strip(_AROUND_NAME))
        if name in PROGRAM_SECRET_FLAGS or name in LOGIN_PROGRAMS:
            self.reset()
            self.program = name
            self.flags = PROGRAM_SECRET_FLAGS.get(name, ())
            self.login = name in LOGIN_PROGRAMS
            return None
        if self.login and word == "login":
            self.flags, self.login = LOGIN_FLAGS, False
            return None
        return self._option(word)

    def _option(self, word: str) -> tuple[int, int] | None:
        """The password in `word` if it is a password option with its value attached."""
        for flag, attached_only in self.flags:
            if word == flag:
                self.expect = not attached_only
                return None
            if not word.startswith(flag) or len(word) == len(flag):
                continue
            if flag.startswith("--") or len(flag) > 2:
                if word[len(flag)] == "=":
                    return self._found(word[len(flag) + 1 :], len(flag) + 1)
                continue
            return self._found(word[len(flag) :], len(flag))
        return None

    def _found(self, value: str, offset: int) -> tuple[int, int] | None:
        """The password's span in the word (value starts at `offset`); the command is done."""
        span = None if is_redacted(value.strip("'\"")) else _secret_span(value, self.program)
        self.flags = ()  # one password per command: later -p are someone else's (ssh -p 22)
        if span is None or is_redacted(value[span[0] : span[1]]):
            return None
        return offset + span[0], offset + span[1]


_SHELL_WORD = re.compile(r"[^ \t]{1,65536}+")
#: Every program some of whose options carry a password.
_PROGRAMS = frozenset((*PROGRAM_SECRET_FLAGS, *LOGIN_PROGRAMS))


def _names_a_program(line: str) -> bool:
    """Whether a word of `line` is a known program (`/usr/bin/mysql`, not `iggy_server`)."""
    return not _PROGRAMS.isdisjoint(w.rsplit("/", 1)[-1].strip(_AROUND_NAME) for w in line.split())


@dataclass
class _ProgramScanner:
    """Scans lines for password options of known programs.

    A command continues on the next line after a trailing `\\`, and when a line is a
    single word (NUL-separated `/proc/PID/cmdline`: one argument per line).
    """

    name: str
    hints: tuple[str, ...]
    label: str
    walker: _ProgramWalker = field(default_factory=_ProgramWalker)
    carry: bool = False

    @property
    def open(self) -> bool:
        """Whether the next line continues a command whose password may follow."""
        return self.carry and (self.walker.active or self.walker.expect)

    def scan(self, line: str) -> list[Hit]:
        """A hit for each password given to a known program in `line`."""
        if not self.carry:
            self.walker.reset()
            if not _names_a_program(line):  # most lines with a hint: `iggy_server::…`
                return []
        hits: list[Hit] = []
        words = 0
        for match in _SHELL_WORD.finditer(line):
            words += 1
            word = match.group()
            if word == "\\":
                continue
            span = self.walker.word(word.rstrip(";"))
            if span is not None:
                hits.append(
                    Hit(match.start() + span[0], match.start() + span[1], self.name, self.label)
                )
            if word.endswith(";") and word != ";":
                self.walker.reset()
        self.carry = words == 1 or line.rstrip().endswith("\\")
        return hits


@dataclass(frozen=True)
class ProgramOptionRule:
    """Short options that carry a password for the programs that use them that way."""

    name: str = PROGRAM_OPTION
    description: str = (
        "Passwords given to known programs by short option: mysql -pX, redis-cli -a X,"
        " sshpass -p X, iggy -p X, curl -u user:X, ldapsearch -w X, docker login -p X, …"
    )
    label: str = PROGRAM_OPTION_LABEL
    # A program's name as a word of its own: followed by a blank, or by NUL (the end of
    # an argument in /proc/PID/cmdline). So `iggy_server::…`, in every line of an Iggy
    # log, wakes nothing. (A hint may include the line's terminator.)
    hints: tuple[str, ...] = tuple(
        f"{name}{end}" for name in sorted(_PROGRAMS) for end in (" ", "\t", "\0")
    )
    examples: tuple[str, ...] = (
        "/usr/bin/mysql -u root -p«S3cret» db",
        "redis-cli -h cache -a '«hunter2»' ping",
        "iggy -u iggy -p «iggy» stream list",
        "curl -u bob:«pw» https://x",
        "curl -u «sk_test_bsDe0G9Cryn687neLfjVHq8x»: https://api.stripe.com/v1/charges",
        "sshpass -p «Tr0ub4dor» ssh -p 22 backup@host",
        "ldapsearch -x -D cn=admin,dc=corp -w «ldapPw1» -b dc=corp",
        "echo x | docker login -u ci -p «dckrpw123» registry.internal",
        "openssl pkcs12 -in a.p12 -passin pass:«p12pass» -nokeys",
        "keytool -list -keystore k.jks -storepass «changeit»",
        "mongosh -u admin -p «M0ngoPw» --authenticationDatabase admin",
    )
    benign: tuple[str, ...] = (
        "mysql -u root -p db",
        "ssh -p 22 host; redis-server --port 6379",
        "iggy-server --config /etc/iggy/server.toml",
        "docker run -p 8080:80 nginx",
        "openssl enc -aes256 -passin env:BACKUP_PASS -in x",
        "mysql -u root -p[REDACTED:cli-password] db",
    )

    def scanner(self) -> _ProgramScanner:
        """A fresh scanner (a command may continue on the next line)."""
        return _ProgramScanner(self.name, self.hints, self.label)


def secret_arguments(argv: Sequence[str]) -> list[tuple[int, int, str, str]]:
    """Secrets in an argv list: (argument index, offset where the secret starts, rule, label).

    The secret runs from the offset to the end of that argument. Covers what needs more
    than one argument to see (`["--password", "hunter2"]`, `["mysql", "-phunter2"]`,
    `["curl", "-u", "bob:pw"]`) and `--password=two words`, whose value an argument holds
    whole (text rules stop at the space).
    """
    found: list[tuple[int, int, str, str]] = []
    walker = _ProgramWalker()
    after_option = False
    for index, arg in enumerate(argv):
        span = walker.word(arg)
        if span is not None:
            found.append((index, span[0], PROGRAM_OPTION, PROGRAM_OPTION_LABEL))
        elif after_option and arg and not arg.startswith(("--", "/")) and not is_redacted(arg):
            found.append((index, 0, SECRET_OPTION, SECRET_OPTION_LABEL))
        else:
            assigned = _ARG_ASSIGNED.match(arg)
            if assigned and _takes_secret(assigned.group("name"), False):
                rest = arg[assigned.end() :]
                if rest and not is_redacted(rest):
                    found.append((index, assigned.end(), SECRET_OPTION, SECRET_OPTION_LABEL))
        option = _ARG_OPTION.fullmatch(arg)
        after_option = option is not None and _takes_secret(option.group("name"), True)
    return found


SECRET_OPTIONS = SecretOptionRule()
PROGRAM_OPTIONS = ProgramOptionRule()

#: The command-line rules, in no particular order (hits are merged).
CMDLINE_RULES: tuple[Rule, ...] = (SECRET_OPTIONS, PROGRAM_OPTIONS)
