"""A tiny DOM built with the standard library's html.parser, enough to query the pages in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = None

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, pred: Callable[[Node], bool] | None = None,
                 **attrs: str) -> list[Node]:
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in n.classes:
                continue
            if any(n.attrs.get(k.rstrip("_")) != v for k, v in attrs.items()):
                continue
            if pred and not pred(n):
                continue
            out.append(n)
        return out

    def find(self, *args, **kwargs) -> Node:
        found = self.find_all(*args, **kwargs)
        assert found, f"no element matches {args} {kwargs}"
        return found[0]

    def ancestors(self) -> Iterator[Node]:
        n = self.parent
        while n is not None:
            yield n
            n = n.parent


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), parent=self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), parent=self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


def head_meta(doc: Node) -> list[tuple[str, str]]:
    """(name, content) of every <meta name=...> inside <head>, in document order."""
    head = doc.find("head")
    return [(m.attrs["name"], m.attrs.get("content") or "") for m in head.find_all("meta") if m.attrs.get("name")]


def submission(doc: Node, form_id: str, button: Node, ticked: set[str]) -> tuple[str, list[tuple[str, str]]]:
    """The GET a browser sends when ``button`` submits the form ``form_id`` with the checkboxes whose values
    are in ``ticked`` checked: (action, query parameters in document order). Controls belong to the form by
    nesting or by their ``form`` attribute; of the buttons only the submitter is sent."""
    form = doc.find("form", id=form_id)
    params: list[tuple[str, str]] = []
    for n in doc.iter():
        if n.tag not in ("input", "select", "button") or "disabled" in n.attrs:
            continue
        if n.attrs.get("form") != form_id and not any(a is form for a in n.ancestors()):
            continue
        name = n.attrs.get("name")
        if not name:
            continue
        if n.tag == "button":
            if n is button:
                params.append((name, n.attrs.get("value") or ""))
        elif n.tag == "select":
            options = n.find_all("option")
            chosen = next((o for o in options if "selected" in o.attrs), options[0] if options else None)
            if chosen is not None:
                params.append((name, chosen.attrs.get("value") or chosen.text()))
        elif n.attrs.get("type", "text") in ("checkbox", "radio"):
            if (n.attrs.get("value") or "on") in ticked:
                params.append((name, n.attrs.get("value") or "on"))
        elif n.attrs.get("type") not in ("submit", "button", "reset", "image"):
            params.append((name, n.attrs.get("value") or ""))
    return button.attrs.get("formaction") or form.attrs["action"], params
