"""Render the report's parts to Markdown (plots as PNG files beside it) and to one self-contained HTML page
(plots embedded as data URIs, styles inline: the page opens from disk or an e-mail with nothing else)."""

from __future__ import annotations

import base64
import html

from rich.table import Table as RichTable

from ernie.report.plots import Plot
from ernie.report.tables import Table
from ernie.terminal import remote

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.wrap { overflow-x: auto; } table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #d8d8d8; padding: 4px 7px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } tr:nth-child(even) td { background: #fafafa; }
td.complete { color: #1a7f37; } td.failed, td.incomplete { color: #b42318; font-weight: 600; }
.note { color: #555; font-size: 12.5px; } figure { margin: 1.2em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 12.5px; } ul.answers li { margin: 0.2em 0; }
"""


def to_markdown(title: str, intro: list[str], answers: list[str], tables: list[Table],
                plots: list[Plot], plot_paths: dict[str, str]) -> str:
    """The report as Markdown; `plot_paths` maps a plot's name to its file, relative to the Markdown.

    Every text is escaped by `_md`: cells and answers quote result.json, which a host wrote.
    """
    out = [f"# {_md(title)}", "", *map(_md, intro), ""]
    if answers:
        out += ["## Answers", "", *(f"- {_md(a)}" for a in answers), ""]
    out += ["## Plots", ""]
    out += [f"![{_md(p.title)}]({plot_paths[p.name]})\n" for p in plots]
    for t in tables:
        out += [f"## {_md(t.title)}", ""]
        if not t.rows:
            out += ["(none)", ""]
            continue
        out.append("| " + " | ".join(_md(h) for h in t.headers) + " |")
        out.append("|" + "---|" * len(t.headers))
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in t.rows]
        out.append("")
        if t.note:
            out += [f"_{_md(t.note)}_", ""]
    return "\n".join(out)


def to_html(title: str, intro: list[str], answers: list[str], tables: list[Table], plots: list[Plot]) -> str:
    """The report as one HTML page with every plot embedded."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", *(f"<p class='note'>{e(line)}</p>" for line in intro)]
    if answers:
        body += ["<h2>Answers</h2>", "<ul class='answers'>", *(f"<li>{e(a)}</li>" for a in answers), "</ul>"]
    body.append("<h2>Plots</h2>")
    for p in plots:
        data = base64.b64encode(p.png).decode("ascii")
        body.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(p.title)}'>"
                    f"<figcaption>{e(p.title)}</figcaption></figure>")
    for t in tables:
        body.append(f"<h2>{e(t.title)}</h2>")
        if not t.rows:
            body.append("<p class='note'>(none)</p>")
            continue
        status_col = t.headers.index("status") if "status" in t.headers else -1
        body.append("<div class='wrap'><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers)
                    + "</tr></thead><tbody>")
        for row in t.rows:
            cells = (f"<td class='{e(c)}'>{e(c)}</td>" if i == status_col else f"<td>{e(c)}</td>"
                     for i, c in enumerate(row))
            body.append("<tr>" + "".join(cells) + "</tr>")
        body.append("</tbody></table></div>")
        if t.note:
            body.append(f"<p class='note'>{e(t.note)}</p>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"  # no favicon request: the page needs nothing but itself
        f"<title>{e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _md(text: str) -> str:
    """Text as Markdown shows it literally: HTML escaped (as report.html escapes it), on one line (no heading
    or block can start), `|` kept inside its table cell, and no link or image (`](`), so a value from
    result.json cannot become a tag, a script or a remote image that the reader's viewer loads."""
    one_line = " ".join(text.splitlines())
    return html.escape(one_line, quote=False).replace("|", "\\|").replace("](", "]\\(")


def to_rich(t: Table) -> RichTable:
    """The table for a terminal (rich)."""
    out = RichTable(title=t.title, show_lines=False, header_style="bold", title_justify="left")
    for h in t.headers:
        out.add_column(h, overflow="fold")
    for row in t.rows:
        out.add_row(*(remote(cell) for cell in row))  # cells are a host's data: never markup, never escapes
    return out
