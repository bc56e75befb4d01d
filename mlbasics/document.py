"""Markdown to a self-contained HTML page (figures embedded) and to a PDF, without LaTeX or system
libraries: Python-Markdown turns the Markdown into HTML, and fpdf2 (pure Python) lays that HTML out
as PDF pages with the DejaVu Sans fonts matplotlib ships (Greek letters, ±, ‖ and arrows included).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

from mlbasics import records

IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')
TABLE = re.compile(r"<table>.*?</table>", re.DOTALL)
STYLE = """<style>
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #999; padding: 0.2em 0.5em; text-align: left; }
code { background: #f3f3f3; padding: 0 0.2em; }
img { max-width: 100%; }
</style>"""


def to_html_body(text: str) -> str:
    return markdown.markdown(text, extensions=["tables"], output_format="html")


def embed_images(body: str) -> str:
    """Every <img src="path.png"> as a data URI, so the page needs no other file."""
    def inline(match: re.Match) -> str:
        alt, src = match.groups()
        data = base64.b64encode(Path(html.unescape(src)).read_bytes()).decode("ascii")
        return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
    return IMAGE.sub(inline, body)


def html_page(text: str, title: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n{STYLE}\n</head>\n<body>\n{embed_images(to_html_body(text))}\n</body>\n</html>\n")


def font_files() -> dict[str, Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return {"": folder / "DejaVuSans.ttf", "B": folder / "DejaVuSans-Bold.ttf",
            "I": folder / "DejaVuSans-Oblique.ttf", "BI": folder / "DejaVuSans-BoldOblique.ttf"}


def pdf_html(body: str) -> str:
    """The HTML body as fpdf2 lays it out: images as wide as the text, tables with borders, small cells and
    columns as wide as their content, paragraphs with air between lines."""
    body = IMAGE.sub(lambda m: f'<center><img src="{m.group(2)}" width="440"></center>', body)
    body = TABLE.sub(lambda m: sized_table(m.group(0)), body)
    body = body.replace("<code>", "").replace("</code>", "")  # fpdf2 would switch fonts mid-line
    return body.replace("<p>", '<p line-height="1.35">').replace("<ul>", '<ul line-height="1.35">')


def plain(cell: str) -> str:
    return re.sub(r"<[^>]+>", "", cell)


def sized_table(table: str) -> str:
    """Column widths from the longest cell (a header counts up to 12 characters: it wraps), cells in 8 pt."""
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL) for row in rows]
    needs = [max([min(len(plain(header)), 12)] + [len(plain(row[i])) for row in cells[1:] if len(row) > i]) + 2
             for i, header in enumerate(cells[0])]
    widths = iter(f"{need * 100 / sum(needs):.0f}%" for need in needs)
    table = table.replace(rows[0], re.sub(r"<th([^>]*)>", lambda m: f'<th{m.group(1)} width="{next(widths)}">',
                                          rows[0]), 1)
    table = re.sub(r"(<td[^>]*>)(.*?)(</td>)", r'\1<font size="8">\2</font>\3', table, flags=re.DOTALL)
    return table.replace("<table>", '<table border="1" width="100%">', 1)


def write_pdf(text: str, path: Path, title: str) -> int:
    """Write the PDF (atomically) and return its page count."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_auto_page_break(True, margin=15)
    fonts = font_files()
    for style in ("", "B", "I", "BI"):
        pdf.add_font("dejavu", style=style, fname=str(fonts[style]))
    pdf.add_page()
    pdf.set_font("dejavu", size=10)
    pdf.write_html(pdf_html(to_html_body(text)), font_family="dejavu")
    records.write_atomically(path, lambda part: pdf.output(str(part)))
    return pdf.pages_count
