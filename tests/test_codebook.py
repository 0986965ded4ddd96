"""The VQ codebook explorer (issue 14 item 4): usage over the whole test set against a direct count, where
each token's code is found again by brute-force distances in numpy and counted in a plain loop; per-level
reconstruction errors against decoding those sums; the per-epoch record against the same count. Handlers as
functions over the shipped checkpoints."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from vae_explorer import TrainConfig, build_model, evaluate, fit
from vae_explorer.codebook import code_images, codebook_usage, top_items
from vae_explorer.data.images import to_float

VQ_MODELS = ["digits_vq_vae", "digits_rvq_vae"]


def direct_codes(model, items: torch.Tensor) -> np.ndarray:
    """(N, levels, T) codes by brute force: every token against every codebook vector, level by level on what
    the levels before left, in float64 numpy."""
    with torch.no_grad():
        z_e = model.encoder(to_float(items)).double().numpy()
    books = [b.double().numpy() for b in model.codebooks()]
    d = books[0].shape[1]
    residual = z_e.reshape(len(z_e), -1, d)
    codes = np.zeros((len(z_e), len(books), residual.shape[1]), np.int64)
    for level, book in enumerate(books):
        dist = np.linalg.norm(residual[:, :, None, :] - book[None, None], axis=-1)  # (N, T, K)
        codes[:, level] = dist.argmin(-1)
        residual = residual - book[codes[:, level]]
    return codes


def direct_counts(codes: np.ndarray, k: int) -> np.ndarray:
    counts = np.zeros((codes.shape[1], k), np.int64)
    for item in codes:
        for level, tokens in enumerate(item):
            for code in tokens:
                counts[level, code] += 1
    return counts


def direct_perplexity(counts) -> float:
    total = sum(counts)
    return math.exp(-sum(c / total * math.log(c / total) for c in counts if c))


@pytest.mark.parametrize("name", VQ_MODELS)
def test_usage_over_the_test_set_matches_a_direct_count(explorer, name):
    entry = explorer.load(name)
    model, test_x = entry.model, entry.data.test_x
    codes = direct_codes(model, test_x)
    counts = direct_counts(codes, model.codebooks()[0].shape[0])
    usage = codebook_usage(model, test_x, entry.kind, batch_size=50)  # batches must not change anything
    np.testing.assert_array_equal(usage.indices, codes)
    np.testing.assert_array_equal(usage.counts, counts)
    assert usage.counts.sum() == len(test_x) * usage.tokens * usage.levels
    for level in range(usage.levels):
        assert usage.used[level] == sum(1 for c in counts[level] if c > 0)
        assert usage.dead(level) == [c for c in range(counts.shape[1]) if counts[level, c] == 0]
        assert usage.perplexity[level] == pytest.approx(direct_perplexity(counts[level].tolist()), rel=1e-12)
    # The view's table says the same numbers.
    text = explorer.codebook(name)[3]
    for level in range(usage.levels):
        row = re.search(rf"\| {level + 1} \| \*\*(\d+) / 64\*\* \| (\d+).*? \| \*\*([\d.]+)\*\* \|", text)
        assert row, text
        assert int(row[1]) == (counts[level] > 0).sum() and int(row[2]) == (counts[level] == 0).sum()
        assert float(row[3]) == pytest.approx(direct_perplexity(counts[level].tolist()), abs=0.05)


def test_top_items_of_a_code_are_those_using_it_most(explorer):
    entry = explorer.load("digits_rvq_vae")
    usage = codebook_usage(entry.model, entry.data.test_x, entry.kind)
    for level, code in [(0, int(usage.counts[0].argmax())), (2, 5), (3, int(usage.counts[3].argmin()))]:
        uses = [int((usage.indices[i, level] == code).sum()) for i in range(len(usage.indices))]
        expected = sorted((i for i in range(len(uses)) if uses[i]), key=lambda i: (-uses[i], i))[:8]
        items, counts = top_items(usage, level, code, 8)
        assert items.tolist() == expected and counts.tolist() == [uses[i] for i in expected]
    assert explorer.most_used_code("digits_rvq_vae", 1) == int(np.argmax(usage.counts[0]))
    assert f"**Code {np.argmax(usage.counts[0])}** (level 1)" in explorer.codebook("digits_rvq_vae")[3]
    text = explorer.codebook("digits_rvq_vae", 3, 5)[3]
    assert "**Code 5** (level 3)" in text and f"{int(usage.counts[2, 5]):,} of 1,436 tokens" in text


def test_a_code_alone_and_the_residual_levels_decode_their_sums(explorer):
    entry = explorer.load("digits_rvq_vae")
    model, test_x = entry.model, entry.data.test_x
    books = model.codebooks()
    # One code alone: its vector in all 4 token positions, through the plain decoder.
    alone = code_images(model, 1, [7], tokens=4, levels=4)
    with torch.no_grad():
        torch.testing.assert_close(alone, model.decode(books[1][7].repeat(4)[None]))
    # After each level: the sum of the first l levels' vectors decoded; the last is the full reconstruction.
    codes = direct_codes(model, test_x)
    x = to_float(test_x).double().numpy()
    errors = []
    for level in range(1, 5):
        z = sum(books[lv].double().numpy()[codes[:, lv]] for lv in range(level)).reshape(len(x), -1)
        with torch.no_grad():
            recon = model.decode(torch.as_tensor(z, dtype=torch.float32)).double().numpy()
        errors.append(((recon - x) ** 2).mean())
    with torch.no_grad():
        full = model.reconstruct(to_float(test_x)).double().numpy()
    assert ((full - x) ** 2).mean() == pytest.approx(errors[-1], rel=1e-5)
    assert errors == sorted(errors, reverse=True)  # each level corrects what the ones before left
    _, _, levels_image, text = explorer.codebook("digits_rvq_vae")
    shown = [float(v) for v in re.findall(r"\*\*(0\.\d{5})\*\*", text)]
    assert shown == pytest.approx(errors, abs=1e-5)
    assert levels_image.size[0] > levels_image.size[1] * 0.7  # 5 columns (input + 4 levels) by 6 rows


def test_models_without_a_codebook_get_a_message(explorer):
    for name in ("digits_ae", "digits_vae", "breast_cancer_tabular_ae", "breast_cancer_tabular_vae"):
        entry = explorer.load(name)
        x = entry.kind.prepare(entry.data.test_x[:2])
        assert entry.model.codebooks() is None and entry.model.code_indices(x) is None
        assert codebook_usage(entry.model, entry.data.test_x, entry.kind) is None
        grid, users, levels, text = explorer.codebook(name)
        assert grid is None and users is None and levels is None
        assert "has no codebook" in text and "vq_vae, rvq_vae" in text and "digits_vq_vae" in text
        assert explorer.most_used_code(name) is None


def test_the_codebook_view_refuses_bad_choices(explorer):
    from vae_explorer.server.explorer import ViewError
    with pytest.raises(ViewError, match="Code must be a whole number from 0 to 63"):
        explorer.codebook("digits_vq_vae", 1, 64)
    with pytest.raises(ViewError, match="Level must be a whole number from 1 to 4"):
        explorer.codebook("digits_rvq_vae", 5, None)
    fig, users, levels, text = explorer.codebook("digits_vq_vae", 1, 0)
    assert levels is None and "**Code 0** (level 1)" in text
    assert len(fig.layout.images) == (explorer.load("digits_vq_vae").model.codebooks()[0].shape[0]
                                      - len(codebook_usage(explorer.load("digits_vq_vae").model,
                                                           explorer.load("digits_vq_vae").data.test_x,
                                                           explorer.load("digits_vq_vae").kind).dead(0)))


@pytest.mark.parametrize("name", VQ_MODELS)
def test_evaluate_records_whole_set_usage(explorer, name):
    """evaluate() (run after every epoch) adds codes_used and perplexity_all from counts summed over all the
    items, not batch means: equal to the direct count whatever the batch size."""
    entry = explorer.load(name)
    model, test_x = entry.model, entry.data.test_x
    counts = direct_counts(direct_codes(model, test_x), model.codebooks()[0].shape[0])
    for batch_size in (37, 500):
        metrics = evaluate(model, test_x, entry.kind, batch_size=batch_size)
        assert metrics["codes_used"] == pytest.approx(np.mean([(c > 0).sum() for c in counts]))
        assert metrics["perplexity_all"] == pytest.approx(np.mean([direct_perplexity(c.tolist()) for c in counts]))
    assert "codes_used" not in evaluate(explorer.load("digits_ae").model, test_x)


def test_training_records_whole_set_usage_per_epoch(digits):
    torch.manual_seed(0)
    model = build_model("rvq_vae", **digits.model_settings())
    result = fit(model, digits, TrainConfig(epochs=2, batch_size=64, eval_items=100, device="cpu", iwae_k=0))
    assert [h["epoch"] for h in result.history] == [1, 2]
    # The same evenly spaced 100 test items the loop evaluates, counted directly with the final weights.
    picked = digits.test_x[torch.linspace(0, len(digits.test_x) - 1, 100).long()]
    model.eval()
    counts = direct_counts(direct_codes(model, picked), model.codebooks()[0].shape[0])
    last = result.history[-1]["test"]
    assert result.history[-1]["test_items"] == 100
    assert last["codes_used"] == pytest.approx(np.mean([(c > 0).sum() for c in counts]))
    assert last["perplexity_all"] == pytest.approx(np.mean([direct_perplexity(c.tolist()) for c in counts]))
    assert all({"codes_used", "perplexity_all"} <= set(h["test"]) for h in result.history)


def test_asking_for_codes_changes_nothing_and_bad_indices_are_refused(explorer):
    """code_indices equals what forward quantizes with, also in training mode, where it must not move the usage
    statistics or re-seed codes; decode_indices refuses indices outside the codebook."""
    entry = explorer.load("digits_rvq_vae")
    model = entry.model
    x = entry.kind.prepare(entry.data.test_x[:64])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        indices = model.code_indices(x)
    finally:
        model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        assert torch.equal(indices, model.quantize(model.encoder(x))[1])
    for bad in (64, -2):
        with pytest.raises(ValueError, match="must be -1 or from 0 to 63"):
            model.decode_indices(torch.full((1, 1, 4), bad))
    with pytest.raises(ValueError, match="at most 4 levels, 4 tokens"):
        model.decode_indices(torch.zeros(1, 5, 4, dtype=torch.long))
