"""Attribute vectors between groups chosen as test items (points selected on the map) rather than labels: the
same direction, consistency, strip and histogram as the label's when the selection is exactly a label's items."""
from __future__ import annotations

import numpy as np
import pytest

from vae_explorer.attributes import attribute_vector
from vae_explorer.server import ViewError


def _items(entry, label: int) -> str:
    return ", ".join(str(i) for i in np.flatnonzero(entry.labels == label))


def test_a_selection_of_a_labels_items_gives_the_labels_attribute_vector(explorer):
    entry = explorer.load("digits_vae")
    strip, fig, text = explorer.attribute_view("digits_vae", "1", "7", 5)
    picked_strip, picked_fig, picked_text = explorer.attribute_view("digits_vae", "", "", 5, _items(entry, 1),
                                                                    [int(i) for i in np.flatnonzero(entry.labels == 7)])
    np.testing.assert_array_equal(np.asarray(picked_strip), np.asarray(strip))
    expected = attribute_vector(entry.codes, entry.labels == 1, entry.labels == 7)
    assert f"Consistency **{expected.consistency:.2f}**" in picked_text
    length = f"length **{np.linalg.norm(expected.direction):.3g}**"
    assert length in text and length in picked_text
    for ours, theirs in zip(picked_fig.data, fig.data):  # the same histogram: other items, A, B
        np.testing.assert_allclose(np.sort(np.asarray(ours.x)), np.sort(np.asarray(theirs.x)))
    assert [t.name for t in picked_fig.data][1:] == [f"your {expected.size_a} chosen images ({expected.size_a})",
                                                    f"your {expected.size_b} chosen images ({expected.size_b})"]
    same = explorer.attribute_at("digits_vae", "1", "7", 5, 0.7)
    picked = explorer.attribute_at("digits_vae", "x", "y", 5, 0.7, _items(entry, 1), _items(entry, 7))
    np.testing.assert_array_equal(np.asarray(picked), np.asarray(same))


def test_a_selection_and_a_label_mix(explorer):
    entry = explorer.load("digits_vae")
    chosen = [3, 10, 11, 12, 40]
    _, fig, text = explorer.attribute_view("digits_vae", "ignored", "0", 2, "3, 10-12, 40 40", None)
    expected = attribute_vector(entry.codes, chosen, entry.labels == 0)
    assert f"Consistency **{expected.consistency:.2f}**" in text and "your 5 chosen images" in text
    # An item in both groups (a 0 among the five) is drawn with B.
    in_both = int((entry.labels[chosen] == 0).sum())
    assert any(t.name == f"your 5 chosen images ({5 - in_both})" for t in fig.data)


@pytest.mark.parametrize("a, b, words", [("1, 2", "1-2", "two different groups"),
                                         ("1, x", "", "'x' is not a test index"),
                                         ("1, 99999", "", "out of range")])
def test_bad_selections_get_messages(explorer, a, b, words):
    with pytest.raises(ViewError, match=words):
        explorer.attribute_view("digits_vae", "7", "7", 0, a, b or None)


def test_the_selection_map_rings_the_groups(explorer):
    entry = explorer.load("digits_vae")
    fig = explorer.attribute_map("digits_vae", "1", "", None, "5, 6, 7")
    assert fig.layout.dragmode == "select" and fig.layout.meta["select"] == "attribute"
    rings = {t.name: t for t in fig.data if t.name.startswith("group")}
    ones = np.flatnonzero(entry.labels == 1)
    assert set(rings) == {f"group A ({len(ones)})", "group B (3)"}
    b = rings["group B (3)"]
    np.testing.assert_array_equal(np.asarray(b.customdata), [5, 6, 7])
    np.testing.assert_allclose(np.column_stack([b.x, b.y]), entry.codes[[5, 6, 7]], rtol=1e-6)  # 2-D: raw codes


def test_groups_of_items_through_the_server(app_server, digits):
    gradio_client = pytest.importorskip("gradio_client")
    client = gradio_client.Client(app_server[0], analytics_enabled=False, verbose=False)
    _, explorer = app_server
    entry = explorer.load("digits_vae")
    ones, sevens = _items(entry, 1), _items(entry, 7)
    _, _, _, by_label = client.predict("digits_vae", "1", "7", 5, api_name="/attribute_vector")
    _, _, _, by_items = client.predict("digits_vae", "1", "7", 5, ones, sevens, api_name="/attribute_vector")
    expected = attribute_vector(entry.codes, entry.labels == 1, entry.labels == 7)
    assert f"Consistency **{expected.consistency:.2f}**" in by_label and f"Consistency **{expected.consistency:.2f}**" \
        in by_items and "chosen images" in by_items and "labelled 7" in by_label
    with pytest.raises(Exception, match="out of range"):
        client.predict("digits_vae", "1", "7", 5, "1, 99999", "", api_name="/attribute_vector")


def test_an_empty_selection_text_says_so(explorer):
    with pytest.raises(ViewError, match="no test index given"):
        explorer.attribute_view("digits_vae", "7", "1", 0, " , ", None)
