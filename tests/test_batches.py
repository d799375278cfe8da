import chex
import numpy as np
import pytest

from bytelm.data import batches


def test_x_y_are_one_hot_and_shifted_by_one():
    ids = np.arange(100, dtype=np.uint8)
    b = batches.make_batch(ids, np.array([3, 50]), seq_len=8)
    chex.assert_shape([b.x, b.y], (2, 8, 256))
    assert b.x.dtype == b.y.dtype == np.float32
    np.testing.assert_array_equal(b.x.sum(-1), 1.0)
    np.testing.assert_array_equal(b.x[0].argmax(-1), np.arange(3, 11))
    np.testing.assert_array_equal(b.y[0].argmax(-1), np.arange(4, 12))
    np.testing.assert_array_equal(b.mask, 1.0)


def test_short_window_is_padded_with_space_and_masked():
    ids = np.array([65, 66, 67, 68, 69], dtype=np.uint8)  # 5 ids: 4 targets from start 0
    b = batches.make_batch(ids, np.array([0, 2]), seq_len=6)
    np.testing.assert_array_equal(b.x[0].argmax(-1), [65, 66, 67, 68, 69, batches.PAD_ID])
    np.testing.assert_array_equal(b.y[0].argmax(-1), [66, 67, 68, 69, 32, 32])
    np.testing.assert_array_equal(b.mask[0], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(b.mask[1], [1, 1, 0, 0, 0, 0])


def test_train_starts_depend_only_on_seed_and_step():
    a = batches.train_starts(10_000, 64, 12, step=7, seed=3, bank=None)
    b = batches.train_starts(10_000, 64, 12, step=7, seed=3, bank=None)
    c = batches.train_starts(10_000, 64, 12, step=8, seed=3, bank=None)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 10_000 - 65


def test_window_bank_is_fixed_and_steps_draw_from_it():
    bank = batches.window_bank(10_000, 64, 32, seed=0)
    np.testing.assert_array_equal(bank, batches.window_bank(10_000, 64, 32, seed=0))
    for step in range(20):
        assert set(batches.train_starts(10_000, 64, 12, step, 0, bank)) <= set(bank)


def test_eval_starts_tile_without_overlap_and_cap_the_count():
    starts = batches.eval_starts(1000, 64, 0)
    np.testing.assert_array_equal(np.diff(starts), 64)
    assert starts[0] == 0 and starts[-1] + 1 < 1000
    few = batches.eval_starts(1000, 64, 4)
    assert few.size == 4 and set(few) <= set(starts)


def test_assert_batch_names_the_expected_shape():
    b = batches.make_batch(np.arange(100, dtype=np.uint8), np.array([0, 1]), seq_len=8)
    batches.assert_batch(b, 2, 8)
    with pytest.raises(AssertionError, match=r"\(3, 8, 256\)"):
        batches.assert_batch(b, 3, 8)
    with pytest.raises(AssertionError):
        batches.assert_batch(batches.Batch(b.x.astype(np.float64), b.y, b.mask), 2, 8)
