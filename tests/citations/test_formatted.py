"""Formatted references compared with the exact strings APA and IEEE prescribe for three well-known
papers of the catalogue, written out by hand from the style rules:

APA 7 (published proceedings treated like a periodical): every author (up to 20) as ``Family, I. I.``,
``&`` before the last, ``(year).``, the title as stored, the proceedings title in italics, pages, then
the DOI or URL. IEEE: initials first, ``et al.`` after the first author when there are more than six,
the title in double quotes with the comma inside (American punctuation), ``in`` and the proceedings in
italics, abbreviated month, ``pp.`` with an en dash, ``[Online]. Available: URL``.
"""

from __future__ import annotations

import pytest

from service.citations import formatted

CBAM_URL = ("https://openaccess.thecvf.com/content_ECCV_2018/html/"
            "Sanghyun_Woo_Convolutional_Block_Attention_ECCV_2018_paper.html")

APA = {
    "transformer": "Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J., Jones, L., Gomez, A. N., Kaiser, Ł., "
                   "& Polosukhin, I. (2017). Attention Is All You Need. Advances in Neural Information Processing "
                   "Systems (NIPS). https://arxiv.org/abs/1706.03762",
    "squeeze-and-excitation": "Hu, J., Shen, L., & Sun, G. (2018). Squeeze-and-Excitation Networks. Proceedings of "
                              "the IEEE Conference on Computer Vision and Pattern Recognition (CVPR). "
                              "https://arxiv.org/abs/1709.01507",
    "cbam": "Woo, S., Park, J., Lee, J.-Y., & Kweon, I. S. (2018). CBAM: Convolutional Block Attention Module. "
            "Proceedings of the European Conference on Computer Vision (ECCV), 3–19. " + CBAM_URL,
}
IEEE = {
    "transformer": "[1] A. Vaswani et al., “Attention Is All You Need,” in Advances in Neural Information "
                   "Processing Systems (NIPS), 2017. [Online]. Available: https://arxiv.org/abs/1706.03762",
    "squeeze-and-excitation": "[1] J. Hu, L. Shen, and G. Sun, “Squeeze-and-Excitation Networks,” in Proceedings "
                              "of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR), 2018. "
                              "[Online]. Available: https://arxiv.org/abs/1709.01507",
    "cbam": "[1] S. Woo, J. Park, J.-Y. Lee, and I. S. Kweon, “CBAM: Convolutional Block Attention Module,” in "
            "Proceedings of the European Conference on Computer Vision (ECCV), Sep. 2018, pp. 3–19. [Online]. "
            "Available: " + CBAM_URL,
}


@pytest.mark.parametrize("slug", list(APA))
def test_apa_text(client, slug):
    r = client.get(f"/techniques/{slug}/citation", headers={"Accept": "text/x-bibliography; style=apa"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/x-bibliography; charset=utf-8"
    assert r.text == APA[slug] + "\n"


@pytest.mark.parametrize("slug", list(IEEE))
def test_ieee_text(client, slug):
    r = client.get(f"/techniques/{slug}/citation", params={"format": "text", "style": "ieee", "locale": "en-US"})
    assert r.status_code == 200
    assert r.text == IEEE[slug] + "\n"


def test_apa_and_ieee_html(client):
    apa = client.get("/techniques/cbam/citation", params={"format": "html", "style": "apa"})
    assert apa.headers["content-type"] == "text/html; charset=utf-8"
    assert apa.text == (
        '<div class="csl-bib-body">\n  <div class="csl-entry">Woo, S., Park, J., Lee, J.-Y., &amp; Kweon, I. S. '
        "(2018). CBAM: Convolutional Block Attention Module. <i>Proceedings of the European Conference on Computer "
        f"Vision (ECCV)</i>, 3–19. {CBAM_URL}</div>\n</div>\n")
    ieee = client.get("/techniques/transformer/citation", params={"format": "html", "style": "ieee"})
    assert ieee.text == (
        '<div class="csl-bib-body">\n  <div class="csl-entry"><div class="csl-left-margin">[1]</div>'
        '<div class="csl-right-inline">A. Vaswani <i>et al.</i>, “Attention Is All You Need,” in <i>Advances in '
        "Neural Information Processing Systems (NIPS)</i>, 2017. [Online]. Available: "
        "https://arxiv.org/abs/1706.03762</div></div>\n</div>\n")


def test_a_set_is_ordered_by_the_style(client):
    params = {"q": "\"Squeeze-and-Excitation\" OR CBAM OR Transformer", "include_survey": "false"}
    slugs = {t["slug"] for t in client.get("/techniques", params={"q": params["q"], "limit": 100}).json()["items"]}
    assert {"cbam", "squeeze-and-excitation", "transformer"} <= slugs
    apa = client.get("/export", params={**params, "format": "text", "style": "apa"}).text.strip().split("\n\n")
    assert apa == sorted(apa, key=str.lower)  # author-date: alphabetical
    assert APA["cbam"] in apa and APA["transformer"] in apa
    ieee = client.get("/export", params={**params, "format": "text", "style": "ieee"}).text.strip().split("\n\n")
    assert [e.split("]")[0] for e in ieee] == [f"[{i}" for i in range(1, len(ieee) + 1)]  # numbered in order


@pytest.mark.parametrize("style", formatted.style_names())
def test_every_bundled_style_renders_text_and_html(client, style):
    for fmt in ("text", "html"):
        r = client.get("/techniques/cbam/citation", params={"format": fmt, "style": style})
        assert r.status_code == 200, r.text
        assert "Woo" in r.text and "Convolutional Block Attention Module" in r.text
    chicago = client.get("/techniques/cbam/citation", params={"format": "text", "style": "chicago-author-date"}).text
    assert chicago.startswith("Woo, Sanghyun, Jongchan Park, Joon-Young Lee, and In So Kweon. 2018.")


def test_locale_changes_terms_and_quotes(client):
    de = client.get("/techniques/squeeze-and-excitation/citation",
                    params={"format": "text", "style": "ieee", "locale": "de-DE"}).text
    assert "J. Hu, L. Shen, und G. Sun, „Squeeze-and-Excitation Networks“, in" in de
    assert "Verfügbar unter:" in de
    gb = client.get("/techniques/squeeze-and-excitation/citation",
                    params={"format": "text", "style": "ieee", "locale": "en-GB"}).text
    assert "‘Squeeze-and-Excitation Networks’, in" in gb  # British: punctuation outside the quotes
    bare = client.get("/techniques/cbam/citation", params={"format": "text", "style": "apa", "locale": "en"})
    assert bare.status_code == 200  # a language alone means its primary dialect


def test_unknown_style_or_locale(client):
    r = client.get("/techniques/cbam/citation", params={"format": "text", "style": "mla"})
    assert r.status_code == 400 and "apa" in r.json()["error"]["details"]["allowed"]
    r = client.get("/techniques/cbam/citation", params={"format": "text", "locale": "xx-YY"})
    assert r.status_code == 400 and "en-US" in r.json()["error"]["details"]["allowed"]


@pytest.fixture(scope="module")
def library_items(client) -> list[dict]:
    return client.get("/export", params={"format": "csl-json"}).json()


@pytest.mark.parametrize("style", formatted.style_names())
def test_entries_from_the_cache_equal_one_bibliography(library_items, style):
    """:func:`formatted.render` assembles a set from cached per-item entries; citeproc-py rendering the set
    as one bibliography must give the same entries in the same order, for any set and cache state."""
    formatted.clear_cache()
    some = library_items[::3]
    shuffled = list(reversed(library_items[1::4]))
    for output in ("text", "html"):
        assert formatted.render(some, style, output=output) == formatted.render_together(some, style, output=output)
    # now most entries are cached, some are not; the order of the input must not matter
    assert formatted.render(shuffled, style) == formatted.render_together(shuffled, style)
    assert formatted.render(library_items, style) == formatted.render_together(library_items, style)
    assert formatted.render(library_items[:1], style, output="html") == formatted.render_together(
        library_items[:1], style, output="html")
