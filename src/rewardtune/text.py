"""User-supplied strings: format templates, secrets in URLs and headers, text for a terminal;
and the word n-grams that diversity and the repetition reward count."""

from __future__ import annotations

import codecs
import os
import re
import string
import unicodedata

from rewardtune.types import RewardtuneError


def template_fields(template: str) -> list[str]:
    """The ``{placeholder}`` names of a str.format template; a stray brace or a placeholder
    that is not a plain name (``{}``, ``{0}``, ``{a.b}``) is a ValueError."""
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError as err:
        raise ValueError(f"{template!r}: {err}; write a literal brace as {{{{ or }}}}") from None
    for field in fields:
        if not field.isidentifier():
            raise ValueError(
                f"{template!r}: placeholder {{{field}}} must be a column name like {{text}} "
                "(write a literal brace as {{ or }})"
            )
    return fields


def checked_template(template: str) -> str:
    template_fields(template)
    return template


def checked_encoding(encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1)") from None
    return encoding


def checked_run_dir(folder: str) -> str:
    """``run.dir``: a folder name whose only placeholders are {recipe} and {time}."""
    if not folder.strip():
        raise ValueError("empty; name a folder, e.g. runs/{recipe}-{time}")
    unknown = set(template_fields(folder)) - {"recipe", "time"}
    if unknown:
        raise ValueError(
            f"{folder!r}: unknown placeholder {{{sorted(unknown)[0]}}}; "
            "only {recipe} and {time} are filled in"
        )
    return folder


REDACTED = "REDACTED"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def redact_value(value: str) -> str:
    """A value made only of ${ENV} references (and text around them) is kept: it names the
    secret without holding it; anything else that may be a secret is replaced."""
    return value if _ENV_REF.search(value) else REDACTED


def redact_url(url: str) -> str:
    """``https://user:pw@host/p?token=x`` -> ``https://REDACTED@host/p?token=REDACTED``
    (${ENV} references are kept)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo if _ENV_REF.fullmatch(userinfo) else REDACTED}@{host}"
    query = urlencode(
        [(k, redact_value(v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="${}",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def fill_env(text: str, where: str) -> str:
    """Replace each ${NAME} by the environment variable NAME (at call time, never stored)."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise RewardtuneError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(value, text)


# Cc: control characters (NUL, CR, ESC, which starts colour, cursor and hyperlink
# sequences); Cf: invisible format characters (zero-width spaces and joiners, bidi overrides
# and isolates, which reorder what a reader sees); Cs: lone surrogates, which no file or
# terminal can encode
_UNSAFE = {"Cc", "Cf", "Cs"}


def printable(text: str) -> str:
    """Model text made safe for a terminal or a report: control, invisible format and
    surrogate characters are shown as escapes like ``\\x1b`` or ``\\u202e``; newlines and
    tabs stay, and a Windows line end (CRLF) is a newline."""
    return "".join(
        c
        if c in "\n\t" or unicodedata.category(c) not in _UNSAFE
        else c.encode("unicode_escape").decode()
        for c in text.replace("\r\n", "\n")
    )


def one_line(text: str, limit: int = 120) -> str:
    """``printable`` text on one line (newlines and tabs escaped too), cut to ``limit``
    characters: an excerpt of a server's reply or an error for a one-line message."""
    flat = printable(text).replace("\n", "\\n").replace("\t", "\\t")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate (a JSON ``"\\ud800"`` alone, or an undecodable byte of a
    command line) replaced by U+FFFD: tokenizers and files take only well-formed Unicode."""
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def word_ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``tokens`` in order (none when there are fewer than ``n``)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
