"""One chart of a check, as the page shows it: an SVG and where it appears."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup


@dataclass(frozen=True)
class Chart:
    """An inline SVG for a check's card; `glance` also puts it on the dashboard strip."""

    check_id: str
    title: str
    svg: Markup
    glance: bool
    uid: str = ""  # the id its <title> and <desc> ids derive from (`<uid>-t`, `<uid>-d`)

    @property
    def glance_svg(self) -> Markup:
        """The SVG again for the dashboard strip, with its own ids (no id twice on a page)."""
        if not self.uid:
            return self.svg
        old, new = self.uid, f"{self.uid}-glance"
        # Node text is escaped (a quote is &#34;), so these quoted forms match attributes only.
        text = str(self.svg)
        for before, after in (
            (f'id="{old}-t"', f'id="{new}-t"'),
            (f'id="{old}-d"', f'id="{new}-d"'),
            (f'aria-labelledby="{old}-t {old}-d"', f'aria-labelledby="{new}-t {new}-d"'),
        ):
            text = text.replace(before, after, 1)
        return Markup(text)
