"""The one owner of escaping: what comes from a record (experiment names, comments, options, paths, labels: any
string a store holds) is text, and every renderer of the analysis passes it through the function of its format
before it reaches an output, so it arrives there inert (no HTML, no Markdown structure, no LaTeX commands, no
spreadsheet formulas, no mathtext, no terminal control sequences).

- `one_line`: any value as one printable line (control characters and newlines -> spaces), cut at `limit`;
- `markdown`: Markdown inline text (also safe in a pipe-table cell, and after conversion to HTML); text the suite
  wrote itself in Markdown is marked `Markdown(...)` and passes unchanged, as markupsafe's `Markup` does for HTML;
- `html`: markupsafe's escape; `markdown_to_html`: the report's converter with raw HTML switched off, so even a
  string that missed `markdown` cannot become a tag;
- `latex`, `csv_cell`, `plot`, `terminal`.

Torch-free (only markupsafe, and markdown when converting).
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

import markupsafe

#: what a one-line value is cut at by default (a record may hold megabytes in a string)
LIMIT = 300


class Markdown(str):
    """Markdown the suite wrote itself (e.g. analysis/paper.py's notes): `markdown` passes it unchanged."""


def _printable(ch: str) -> str:
    if ch in "\t\n\r\v\f":
        return " "
    category = unicodedata.category(ch)
    # Cc control (ESC starts terminal sequences), Cf format (bidi overrides reorder what is shown), line and
    # paragraph separators, unassigned and surrogates
    return " " if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Cn") else ch


def one_line(value: Any, limit: int | None = LIMIT) -> str:
    """`value` as one printable line: str() of it, control/format characters and line breaks as spaces,
    whitespace runs collapsed, cut at `limit` characters (with "…")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = "" if value is None else "nan"
    else:
        try:
            text = value if isinstance(value, str) else str(value)
        except Exception:  # noqa: BLE001 - a value whose str() fails is shown by its type
            text = f"<{type(value).__name__}>"
    text = " ".join("".join(_printable(ch) for ch in text).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


#: what makes inline Markdown structure: `\` escapes, code spans, emphasis, links/images (`[`), table cells,
#: strikethrough; `(`, `#`, `+`, `!` do nothing without `[` or a line start (the text is one line, placed after
#: the renderer's own prefix)
_MD_BACKSLASH = re.compile(r"([\\`*\[\]|~])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown(value: Any, limit: int | None = LIMIT) -> str:
    """Markdown inline text showing `value` literally: one line, `&<>` as entities (no HTML, no autolinks, no
    block quotes), Markdown punctuation backslash-escaped (no emphasis, code, links, images, table cells)."""
    if isinstance(value, Markdown):
        return value
    text = one_line(value, limit)
    text = "".join(_MD_ENTITIES.get(ch, ch) for ch in text)
    # `_` inside a word is not emphasis (python-markdown, CommonMark): left as it is, so names read as written
    text = _MD_BACKSLASH.sub(r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def html(value: Any) -> markupsafe.Markup:
    """HTML text showing `value` literally (markupsafe.escape)."""
    return markupsafe.escape(value if isinstance(value, str) else one_line(value, None))


def markdown_to_html(text: str) -> str:
    """Markdown (the report) -> HTML with raw HTML switched off: a tag in the text stays text."""
    import markdown as markdown_lib

    converter = markdown_lib.Markdown(extensions=["tables"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(text)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex(value: Any, limit: int | None = LIMIT) -> str:
    """LaTeX text showing `value` literally: one line (no paragraph breaks), every special character escaped."""
    return "".join(_LATEX.get(ch, ch) for ch in one_line(value, limit))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting with = + - @ (a formula) gets a leading
    apostrophe (OWASP's advice), and its control characters become spaces; numbers and None pass unchanged.
    The csv module's quoting takes care of commas and quotes."""
    if not isinstance(value, str):
        return value
    text = "".join(_printable(ch) for ch in value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def plot(value: Any, limit: int | None = 120) -> str:
    """Text for a matplotlib label, title or legend: one line and no mathtext (`$` escaped), so a label can
    neither change the figure's text nor fail its rendering."""
    return one_line(value, limit).replace("$", r"\$")


def terminal(value: Any, limit: int | None = None) -> str:
    """One line for a terminal: no escape sequences (ESC and every other control character become spaces)."""
    return one_line(value, limit)


__all__ = ["LIMIT", "Markdown", "csv_cell", "html", "latex", "markdown", "markdown_to_html", "one_line", "plot",
           "terminal"]
