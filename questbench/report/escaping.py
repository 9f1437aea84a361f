"""Names a user gave (models, suites, settings) are data: each output context gets its own escaping.

- markdown: no raw html (``<``, ``>``, ``&`` become entities, which every renderer shows as the character), no
  ``|`` that would split a table row, no backtick that would end a code span, no line break;
- script JSON (the html page's embedded data): ``<``, ``>``, ``&`` and the JavaScript line separators as
  ``\\uXXXX`` escapes, so that no ``</script>`` or ``<!--`` can close or confuse the script element;
- csv: a text cell that a spreadsheet would read as a formula (``= + - @``, tab, carriage return first) gets a
  leading apostrophe (OWASP's recommendation for csv injection).
"""
from __future__ import annotations

import json
import re
from typing import Any

_MD = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "&#96;", "\n": " ", "\r": " "})
_PLAIN = re.compile(r"[A-Za-z0-9._+=/:-]+")


def md_text(text: Any) -> str:
    """Text for a markdown paragraph or table cell."""
    return str(text).translate(_MD)


def md_code(name: Any) -> str:
    """A name in markdown: a code span when it is plain, else escaped text (a code span shows entities raw)."""
    name = str(name)
    return f"`{name}`" if _PLAIN.fullmatch(name) else md_text(name)


_SCRIPT = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """JSON that is safe inside an html ``<script>`` element and parses to ``obj``."""
    text = json.dumps(obj, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT[m.group()], text)


def csv_text(text: str) -> str:
    """A text cell that no spreadsheet evaluates."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
