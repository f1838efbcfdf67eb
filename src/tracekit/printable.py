"""Text from outside tracekit made safe to print on a terminal.

File names, sample ids, class names, attack labels, plugin names and the reasons an image could
not be read are chosen by whoever made the files or the plugin, not by tracekit; printed raw,
an escape sequence among them (`ESC [ 31 m`, a C1 `CSI`, an OSC that retitles the window or
writes a hyperlink) is executed by the terminal rather than shown. `printable` writes every
control character as Python's `repr` would (`\\x1b`, `\\n`, `\\x9b`), and the bidirectional
controls that reorder what is shown (`\\u202e`) as their escapes, so the text reads as what it is.
So are lone surrogates (`\\udc9b`): Python decodes a file name's bytes that are not UTF-8 that way,
and writes them back as the raw bytes (0x9b: a C1 `CSI`) to a stream that allows it. Everything
else, letters of any script included, is kept as it is.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the bidirectional embeddings, overrides, isolates and marks; lone surrogates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, newlines: bool = False) -> str:
    """`text` with every control character written as an escape (`\\x1b`); with `newlines`, line
    breaks (`\\n`) are kept as they are, for text printed on several lines on purpose."""
    text = str(text)
    if not _CONTROL.search(text):
        return text
    if newlines:
        return "\n".join(_CONTROL.sub(_visible, line) for line in text.split("\n"))
    return _CONTROL.sub(_visible, text)
