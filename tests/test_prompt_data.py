"""The prompt phases' data as the authors' loaders give it: ranking pairs drawn anew each refinement phase,
initialisation batches drawn from both lists pooled."""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from torch.utils.data import default_collate

import cliplit_basicsr  # noqa: F401  (registers the dataset)
from cliplit_basicsr.data.prompt_init_pool import BACKLIT, WELLLIT, PromptInitPool
from cliplit_basicsr.models.prompt_loaders import PromptLoaders
from cliplit_basicsr.models.schedule import Phase

N_BACKLIT, N_WELLLIT = 5, 7


def _folder(root: Path, count: int, base: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):  # each image a flat colour that names it
        cv2.imwrite(str(root / f'{i}.png'), np.full((12, 12, 3), base + i, np.uint8))
    return root


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('prompt_data')
    return _folder(root / 'backlit', N_BACKLIT, 10), _folder(root / 'welllit', N_WELLLIT, 100)


def _prompt_opt(roots, **extra):
    return {
        'name': 'prompts',
        'type': 'CLIPLITUnpairedDataset',
        'phase': 'train',
        'dataroot_backlit': str(roots[0]),
        'dataroot_welllit': str(roots[1]),
        'image_size': 8,
        'augment': True,
        'zoom_range': [0.5, 1.5],
        'batch_size_per_gpu': 4,
        'num_worker_per_gpu': 0,
        **extra,
    }


def _run_opt(roots, **extra):
    return {
        'prompt_dataset': _prompt_opt(roots, **extra),
        'manual_seed': 7,
        'world_size': 1,
        'rank': 0,
        'num_gpu': 0,
        'dist': False,
    }


def _pairs(dataset):
    return [tuple(pair) for pair in dataset.pairing.t().tolist()]


def test_pairs_are_both_padded_lists_shuffled(roots):
    dataset = build_dataset(_prompt_opt(roots))
    assert len(dataset) == max(N_BACKLIT, N_WELLLIT)
    before = _pairs(dataset)
    assert before == [(i % N_BACKLIT, i % N_WELLLIT) for i in range(len(dataset))]  # until the first phase
    dataset.redraw_pairing((7, 1))
    after = _pairs(dataset)
    # each list keeps its cycled multiset (the authors pad the shorter list by cycling, then shuffle both)
    assert Counter(b for b, _ in after) == Counter(b for b, _ in before)
    assert Counter(w for _, w in after) == Counter(w for _, w in before)
    assert after != before


def test_each_refinement_phase_ranks_new_pairs_reproducibly(roots):
    loaders = PromptLoaders(_run_opt(roots))
    pairings = {}
    for round_ in (1, 2, 1):
        loaders.pair_for_round(round_)
        pairings.setdefault(round_, []).append(_pairs(loaders.pairs))
    assert pairings[1][0] != pairings[2][0]  # two refinement phases rank different pairs
    assert pairings[1][0] == pairings[1][1]  # the same seed and round give the same pairs (a resume)
    other_seed = PromptLoaders(dict(_run_opt(roots), manual_seed=8))
    other_seed.pair_for_round(1)
    assert _pairs(other_seed.pairs) != pairings[1][0]


def test_items_carry_their_pair(roots):
    loaders = PromptLoaders(_run_opt(roots))
    loaders.pair_for_round(3)
    for item in range(len(loaders.pairs)):
        sample = loaders.pairs[item]
        assert (sample['index'], sample['welllit_index']) == _pairs(loaders.pairs)[item]
        assert Path(sample['backlit_path']).stem == str(sample['index'])


def test_initialisation_pool_holds_both_padded_lists_with_labels(roots):
    pool = PromptInitPool(build_dataset(_prompt_opt(roots)))
    items = [pool[i] for i in range(len(pool))]
    length = max(N_BACKLIT, N_WELLLIT)
    assert len(pool) == 2 * length
    assert [item['label'] for item in items] == [BACKLIT] * length + [WELLLIT] * length
    assert [item['index'] for item in items] == [i % N_BACKLIT for i in range(length)] + list(range(N_WELLLIT))
    batch = default_collate(items)
    images = pool.images(batch, torch.device('cpu'))  # each image a flat colour that names it
    colours = (images[:, 0, 0, 0] * 255).round().long().tolist()
    expected = [10 + item['index'] if item['label'] == BACKLIT else 100 + item['index'] for item in items]
    assert images.shape == (len(items), 3, 8, 8) and colours == expected
    shuffled = torch.randperm(len(items), generator=torch.Generator().manual_seed(0))
    reordered = pool.images(default_collate([items[i] for i in shuffled]), torch.device('cpu'))
    assert torch.equal(reordered, images[shuffled])


def test_initialisation_batches_mix_the_classes_with_the_authors_frequency(roots):
    """Batches of 4 from the shuffled pool: the class mix varies from batch to batch, and over many epochs
    each class makes half of the images; every image gets its own augmentation draw."""
    loaders = PromptLoaders(_run_opt(roots))
    np.random.seed(0)
    mixes, draws, images = [], set(), 0
    for _ in range(60):
        batch = loaders.next_batch(Phase.PROMPT_INIT)
        mixes.append(int((batch['label'] == WELLLIT).sum()))
        images += len(batch['label'])
        distinct = len(set(zip(batch['aug']['zoom_x'].tolist(), batch['aug']['angle'].tolist())))
        draws.add(distinct == len(batch['label']))
    assert len(set(mixes)) >= 3  # 4 + 0 at times, 2 + 2 at others: no fixed 2 + 2 split
    assert sum(mixes) / images == pytest.approx(0.5, abs=0.02)  # each epoch holds the pool: 7 + 7 images
    assert draws == {True}  # every image its own draw
    assert images < 4 * 60  # the last partial batch of an epoch is kept
