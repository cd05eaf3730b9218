"""Text from a host, a cloud API or an endpoint, made safe to print: no terminal escapes, never rich markup.

A log line or an error message from elsewhere can carry escape sequences that retitle the window (OSC 0),
write the clipboard (OSC 52), clear the screen (CSI 2J) or hide what follows (SGR 8); rich would also read
`[red]` or `[link=...]` in it as markup. `clean` removes every escape sequence and control character except
tab and newline; `remote` makes the cleaned text a rich `Text`, which rich never parses as markup.
`SafeConsole` cleans every string it renders: a backstop for messages that put remote text into a string.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

# Whole sequences first, so a title or clipboard payload goes with its introducer rather than being shown.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"                   # CSI (cursor, clear screen, SGR colours and hiding)
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC (title, clipboard, hyperlink) to BEL or ST
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c\n]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings to ST
    r"|\x1b[ -/]*[0-~]"                                     # any other escape (reset, save cursor, charset)
    # Left over: C0 but tab and newline, DEL, C1, and the bidi controls that reorder what is shown.
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


def clean(text: str) -> str:
    """`text` without escape sequences or control characters; tab and newline stay."""
    return _ESCAPES.sub("", text)


def remote(text: str, style: str = "") -> Text:
    """Remote text to print: cleaned, and a `Text`, so `[red]` in it is shown as it is, never as markup."""
    return Text(clean(text), style=style)


class SafeConsole(Console):
    """A rich Console that cleans every string before rendering it (ernie's own markup has no escapes).

    Markup in an interpolated string is still parsed: print remote text with `remote`, or escape it.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(clean(text), **kwargs)
