"""What a browser would show of a report page, without a browser: its text outside
<script> and <style>, and every tag it would build (the report tests' HTML checks)."""
from __future__ import annotations

from html.parser import HTMLParser


class HtmlText(HTMLParser):
    """Collects what a browser would show as text, and every tag it would build."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if not self._in:
            self.text.append(data)


def parse_html(html_text: str) -> HtmlText:
    p = HtmlText()
    p.feed(html_text)
    p.close()
    return p
