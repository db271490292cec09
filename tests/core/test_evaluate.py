"""Metrics (both mAP variants, hand-computed) and the UCM split."""
import numpy as np
import pytest

from duch_desktop.core.archive.hamming import hamming

from duch_desktop.core.research.evaluate import (average_precisions, distances, map_at_k,
                                        pick_one_caption, precision_at_k, ucm_protocol_split)


def codes_at(dists, bits=8):
    """Packed codes whose Hamming distance to the all-zero code is dists[i]."""
    return np.packbits(np.arange(bits)[None, :] < np.asarray(dists)[:, None], axis=1)


Q = codes_at([0])


def ap(dists, labels, k, variant, q_label=0):
    return map_at_k(Q, codes_at(dists), np.array([q_label]), np.asarray(labels), k=k, variant=variant)


def test_hamming_matches_brute_force():
    rng = np.random.default_rng(0)
    q, db = rng.integers(0, 256, (7, 4), dtype=np.uint8), rng.integers(0, 256, (11, 4), dtype=np.uint8)
    brute = (np.unpackbits(q, axis=1)[:, None] != np.unpackbits(db, axis=1)[None]).sum(-1)
    np.testing.assert_array_equal(hamming(q, db), brute)
    np.testing.assert_array_equal(hamming(q, db, chunk_bytes=1), brute)  # chunked path
    np.testing.assert_array_equal(hamming(codes_at([0]), codes_at([0, 3, 8])), [[0, 3, 8]])


def test_real_valued_codes_use_cosine_distance():
    d = distances(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(d, [[0.0, 1.0, 2.0]])


def test_ties_keep_database_order_and_both_variants_by_hand():
    # distances 0,1,1,2,3 -> stable ranking 0,1,2,3,4; relevance (label 0) = 1,0,1,1,0
    dists, labels = [0, 1, 1, 2, 3], [0, 1, 0, 0, 1]
    assert ap(dists, labels, 3, "standard") == pytest.approx((1 + 2 / 3) / 2)
    assert ap(dists, labels, 3, "paper") == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    assert ap(dists, labels, 5, "standard") == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    # swap the tied pair's database order: now the relevant one comes first
    assert ap([0, 1, 1, 2, 3], [0, 0, 1, 0, 1], 3, "standard") == pytest.approx(1.0)


def test_fewer_relevant_than_k_and_hits_beyond_k():
    dists, labels = [0, 1, 2, 3, 4], [1, 0, 1, 1, 0]  # relevant at ranks 2 and 5, R = 2
    # standard@3: only rank 2 is in the top 3 -> P@2 = 1/2
    assert ap(dists, labels, 3, "standard") == pytest.approx(0.5)
    # paper@3: K' = min(3, 2) = 2, positions 2 and 5 in the full ranking
    assert ap(dists, labels, 3, "paper") == pytest.approx((1 / 2 + 2 / 5) / 2)
    # paper@20 with R < K: same K' = 2
    assert ap(dists, labels, 20, "paper") == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert ap(dists, labels, 20, "standard") == pytest.approx((1 / 2 + 2 / 5) / 2)
    # nothing relevant in the top 1: standard is 0, the paper variant still counts rank 2
    assert ap(dists, labels, 1, "standard") == 0.0
    assert ap(dists, labels, 1, "paper") == pytest.approx(1 / 2)


def test_query_without_relevant_items_counts_as_zero_in_the_mean():
    db = codes_at([0, 1, 2])
    q = codes_at([0, 0])
    for variant in ("standard", "paper"):
        assert map_at_k(q, db, np.array([0, 9]), np.array([0, 0, 1]), k=2, variant=variant) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        average_precisions(np.ones((1, 2), bool), 2, "other")


def test_precision_at_k_curve():
    p = precision_at_k(Q, codes_at([0, 1, 2, 3]), np.array([0]), np.array([0, 1, 0, 0]), max_k=4)
    np.testing.assert_allclose(p, [1, 1 / 2, 2 / 3, 3 / 4])


def test_ucm_split_sizes_disjoint_and_seeded():
    tr, q, r = ucm_protocol_split(2100, seed=42)
    assert (len(tr), len(q), len(r)) == (1050, 210, 840)
    allidx = np.concatenate([tr, q, r])
    assert len(np.unique(allidx)) == 2100 and allidx.min() == 0 and allidx.max() == 2099
    again = ucm_protocol_split(2100, seed=42)
    assert all((a == b).all() for a, b in zip((tr, q, r), again))
    assert not (ucm_protocol_split(2100, seed=1)[1] == q).all()


def test_one_caption_per_image_is_seeded():
    caps = [["a", "b", "c", "d", "e"]] * 50
    a = pick_one_caption(caps, np.random.default_rng(42))
    b = pick_one_caption(caps, np.random.default_rng(42))
    assert (a == b).all() and a.min() >= 0 and a.max() <= 4 and len(set(a)) > 1
