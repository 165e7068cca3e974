"""Parity with the authors' CLIP-LIT code: every value and gradient of ``fixtures.pt`` (parity README).

The tiny OpenAI-format checkpoints are loaded through this package's own loading path (a local file
given as ``clip_pretrained``); every shape comes from the fixture file, so other fixture sets made the
same way (``CLIPLIT_PARITY_DIR``) pass unchanged. Tolerance: the README's rule, exactly.
"""

import hashlib

import pytest
import torch

from cliplit_basicsr.archs.prompt_arch import CLIPLITPromptPair, read_prompt_file, x_prompt
from cliplit_basicsr.clip import (
    LOGIT_SCALE,
    RN_MODEL,
    VIT_MODEL,
    encode_token_embeddings,
    image_features,
    load_clip,
    negative_scores,
    preprocess_images,
    prompt_logits,
    resnet_feature_maps,
    tokenize,
)
from cliplit_basicsr.losses.cliplit_loss import (
    DEFAULT_LAYER_WEIGHTS,
    DEFAULT_MARGINS,
    CLIPLITEnhanceLoss,
    CLIPLITIdentityLoss,
    CLIPLITPromptInitLoss,
    CLIPLITPromptRankingLoss,
)

pytestmark = pytest.mark.usefixtures('accel_mode')  # every test with the fast paths on and off

PROMPT_SETS = ('backlit', 'welllit', 'it', 'it1')


def assert_matches(actual, expected, key: str) -> None:
    """The parity README's tolerance: tensors rtol 1e-4, atol 5e-5 * max|e|; floats rtol 1e-4, atol 1e-6."""
    if torch.is_tensor(expected):
        actual = torch.as_tensor(actual).detach().to(expected.dtype)
        torch.testing.assert_close(
            actual, expected, rtol=1e-4, atol=5e-5 * expected.abs().max().item(), msg=lambda m: f'{key}: {m}'
        )
    else:
        actual = actual.item() if torch.is_tensor(actual) else actual
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6), f'{key}: {actual} != {expected}'


@pytest.fixture(scope='module')
def rn_file(parity_dir):
    return str(parity_dir / 'tiny_rn_openai.pt')


@pytest.fixture(scope='module')
def vit(vit_file):
    return load_clip(VIT_MODEL, vit_file)


@pytest.fixture(scope='module')
def rn(rn_file):
    return load_clip(RN_MODEL, rn_file)


@pytest.fixture()
def prompt(vit_file, parity_fixtures):
    """The prompt pair holding the fixtures' ``prompt_embedding`` (the input of every prompt-side key)."""
    pair = CLIPLITPromptPair(clip_pretrained=vit_file, length_prompt=parity_fixtures['length_prompt'])
    with torch.no_grad():
        pair.embedding.copy_(parity_fixtures['prompt_embedding'])
    return pair


@pytest.fixture(scope='module')
def prompt_features(vit_file, parity_fixtures):
    pair = CLIPLITPromptPair(clip_pretrained=vit_file, length_prompt=parity_fixtures['length_prompt'])
    return {name: pair.encode_images(parity_fixtures[f'prompt_img_{name}']) for name in PROMPT_SETS}


def test_checkpoints_are_the_fixtures_ones(parity_dir, parity_fixtures):
    for name, key in (('tiny_vit_openai.pt', 'meta_vit_ckpt_sha256'), ('tiny_rn_openai.pt', 'meta_rn_ckpt_sha256')):
        assert hashlib.sha256((parity_dir / name).read_bytes()).hexdigest() == parity_fixtures[key]


def test_constants(parity_fixtures):
    ones = torch.ones(1, 3, 1, 1)
    # preprocessing a constant image maps channel c to (1 - mean_c) / std_c
    expected = (1 - parity_fixtures['clip_mean']) / parity_fixtures['clip_std']
    assert_matches(preprocess_images(ones)[0, :, 0, 0], expected, 'clip_mean/clip_std')
    assert LOGIT_SCALE == parity_fixtures['logit_scale']
    assert list(DEFAULT_LAYER_WEIGHTS) == parity_fixtures['identity_weights_default'].tolist()
    for form, margins in DEFAULT_MARGINS.items():
        assert list(margins) == pytest.approx(parity_fixtures[f'{form}_margins'].tolist())


def test_prompt_tokens_and_initialisation(vit, vit_file, parity_fixtures):
    f = parity_fixtures
    text = x_prompt(f['length_prompt'])
    assert torch.equal(tokenize([text], vit).cpu(), f['prompt_tokens'])
    pair = CLIPLITPromptPair(clip_pretrained=vit_file, length_prompt=f['length_prompt'])
    assert pair.eot_indices.tolist() == [f['prompt_eot_index']] * 2
    assert_matches(pair.embedding, f['prompt_embedding_init'], 'prompt_embedding_init')
    with torch.no_grad():
        assert_matches(pair(), f['text_features_init'], 'text_features_init')
        assert_matches(
            vit.encode_text(f['prompt_tokens'].expand(2, -1)),
            f['text_features_init_encode_text'],
            'text_features_init_encode_text',
        )


@pytest.mark.parametrize('texts', [None, ['a photo of a backlit scene', 'well lit'], ['low light', 'normal light']])
def test_token_embedding_path_equals_encode_text(vit, texts):
    """With embeddings = CLIP's token embedding and pooling at each EOT, the text path is ``encode_text``."""
    tokens = tokenize(texts or [x_prompt(16)] * 2, vit)
    with torch.no_grad():
        ours = encode_token_embeddings(vit, vit.token_embedding(tokens), tokens.argmax(dim=-1))
        theirs = vit.encode_text(tokens)
    assert_matches(ours, theirs, 'encode_text')


def test_text_features(prompt, parity_fixtures):
    with torch.no_grad():
        assert_matches(prompt(), parity_fixtures['text_features'], 'text_features')


@pytest.mark.parametrize(
    'pooling, key', [('authors', 'alt_text_features_authors'), ('text', 'alt_text_features_encode_text')]
)
def test_alternative_init_texts(vit, vit_file, parity_fixtures, pooling, key):
    f = parity_fixtures
    texts = f['alt_prompt_texts'].split(' | ')
    assert torch.equal(tokenize(texts, vit).cpu(), f['alt_prompt_tokens'])
    pair = CLIPLITPromptPair(
        clip_pretrained=vit_file, init_texts=texts, length_prompt=f['length_prompt'], pooling=pooling
    )
    assert_matches(pair.embedding, f['alt_prompt_embedding_init'], 'alt_prompt_embedding_init')
    with torch.no_grad():
        assert_matches(pair(), f[key], key)


def test_image_features(vit, rn, parity_fixtures):
    f = parity_fixtures
    with torch.no_grad():
        assert_matches(image_features(vit, f['input']), f['vit_image_features_input'], 'vit_image_features_input')
        assert_matches(
            image_features(vit, f['big_input']), f['big_vit_image_features_input'], 'big_vit_image_features_input'
        )
        assert_matches(image_features(rn, f['input']), f['rn_image_features_input'], 'rn_image_features_input')
        shapes = [m.shape[1:] for m in resnet_feature_maps(rn, f['input'][:1])]
    assert torch.equal(torch.tensor(shapes), f['rn_map_shapes'])


def test_clip_enhance_loss(vit_file, parity_fixtures):
    f = parity_fixtures
    loss_fn = CLIPLITEnhanceLoss(clip_pretrained=vit_file)
    text = f['text_features']
    enhanced = f['enhanced'].clone().requires_grad_(True)
    loss = loss_fn(enhanced, text)
    loss.backward()
    assert_matches(loss, f['clip_loss'], 'clip_loss')
    assert_matches(enhanced.grad, f['clip_loss_grad_enhanced'], 'clip_loss_grad_enhanced')
    with torch.no_grad():
        assert_matches(
            loss_fn.negative_scores(f['enhanced'], text), f['clip_neg_prob_enhanced'], 'clip_neg_prob_enhanced'
        )
        assert_matches(loss_fn(f['big_enhanced'], text), f['big_clip_loss'], 'big_clip_loss')


@pytest.mark.parametrize('weights', ['default', 'ones'])
def test_identity_loss(rn_file, parity_fixtures, weights):
    f = parity_fixtures
    loss_fn = CLIPLITIdentityLoss(
        layer_weights=f[f'identity_weights_{weights}'].tolist(), clip_pretrained=rn_file, precision='fp32'
    )
    enhanced = f['enhanced'].clone().requires_grad_(True)
    loss = loss_fn(enhanced, f['input'])
    loss.backward()
    assert_matches(loss, f[f'identity_loss_{weights}'], f'identity_loss_{weights}')
    assert_matches(enhanced.grad, f[f'identity_loss_{weights}_grad_enhanced'], f'identity_loss_{weights}_grad_enhanced')
    if weights == 'default':
        with torch.no_grad():
            assert_matches(
                loss_fn.per_image_layer_mse(f['enhanced'], f['input']),
                f['identity_mse_per_image_layer'],
                'identity_mse_per_image_layer',
            )
            assert_matches(
                loss_fn(f['big_enhanced'], f['big_input']), f['big_identity_loss_default'], 'big_identity_loss_default'
            )


# fp16 tolerances come from a rounding model of the fp16 path, not from one fixture set's figures:
# * unit round-off u = 2^-11: every fp16 operation's result carries a relative error of at most u;
# * depth: a map after d convolutions (stem 3, then 3 per bottleneck block) carries a relative error, in
#   norm, of at most u * sqrt(d): the layers' rounding errors are independent and add in quadrature;
# * the loss's scale: a map error da enters w * MSE(a, b) as (2 w / N) <a - b, da - db>, at most
#   (2 w / N) |a - b| eps (|a| + |b|) (Cauchy-Schwarz); the sum of K positive fp16 terms adds K u of it;
# * the gradient's scale: map l's share g_l of the gradient moves by eps_l (|a| + |b|) / |a - b| (its
#   upstream error) plus u sqrt(d_l) (rounding on the way back), relative to |g_l|.
# The bounds follow from the model and the fixtures' own maps, so any fixture set made by the authors' code
# gets its own; they must stay below 10% of the loss and of the gradient (else the test could not fail).
# They are loose (percents): a second test compares with the authors' own fp16 loop, where only reduction
# order differs, and fails on a 1% error in the loss.
FP16_UNIT_ROUNDOFF = 2.0**-11


def rn_map_depths(visual: torch.nn.Module) -> list:
    """How many convolutions each of the five ModifiedResNet maps comes out of."""
    depths = [3]  # the stem
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        depths.append(depths[-1] + 3 * len(layer))
    return depths


def fp16_rounding_bounds(rn, enhanced, target, weights) -> tuple:
    """(loss bound, gradient bound in norm) of the fp16 identity loss against its fp32 value, from the model
    above and the fp32 maps and per-map gradients of ``enhanced`` against ``target``."""
    u = FP16_UNIT_ROUNDOFF
    enhanced = enhanced.clone().requires_grad_(True)
    maps = resnet_feature_maps(rn, enhanced)
    with torch.no_grad():
        targets = resnet_feature_maps(rn, target)
    loss_bound, grad_bound, total = 0.0, 0.0, 0.0
    for a, b, w, depth in zip(maps, targets, weights, rn_map_depths(rn.visual)):
        eps = u * depth**0.5
        diff, size = (a - b).flatten(1), a[0].numel()
        scale = a.detach().flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1)
        loss_bound += (2 * w / size * diff.detach().norm(dim=1) * eps * scale).sum().item()
        term = w * diff.pow(2).mean(1).sum()
        (grad,) = torch.autograd.grad(term, enhanced, retain_graph=True)
        upstream = (eps * scale / diff.detach().norm(dim=1)).max().item()
        grad_bound += (upstream + eps) * grad.norm().item()
        total += term.item()
    terms = len(weights) * len(enhanced)
    return loss_bound + terms * u * total, grad_bound


def authors_fp16_identity_loss(tower, enhanced, target, weights) -> torch.Tensor:
    """The authors' ``get_clip_score_MSE`` (clip_score.py) on the fp16 tower: image by image, each map's
    ``F.mse_loss`` in fp16, weighted and summed in fp16 as their loop does."""
    score = 0
    for pred, inp in zip(enhanced, target):
        maps = [
            tower.forward_intermediates(preprocess_images(x[None]).half(), intermediates_only=True)[
                'image_intermediates'
            ]
            for x in (pred, inp)
        ]
        per_image = 0
        for w, p, q in zip(weights, *maps):
            per_image = per_image + w * torch.nn.functional.mse_loss(p.squeeze(0), q.squeeze(0))
        score = score + per_image
    return score


@pytest.mark.parametrize('weights', ['default', 'ones'])
def test_identity_loss_in_the_authors_fp16(rn_file, rn, parity_fixtures, weights):
    """The fp16 path against the authors' fp32 values, within the rounding model's bounds."""
    from cliplit_basicsr.clip.loading import fp16_weights_tower

    f = parity_fixtures
    layer_weights = f[f'identity_weights_{weights}'].tolist()
    loss_fn = CLIPLITIdentityLoss(layer_weights=layer_weights, clip_pretrained=rn_file, precision='fp16')
    tower = fp16_weights_tower(rn)
    convs = [m for m in tower.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    norms = [m for m in tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert convs and all(m.weight.dtype == torch.float16 for m in convs)  # OpenAI's fp16 weights
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)  # BatchNorm stays fp32, as theirs
    assert all(p.dtype == torch.float32 for p in rn.visual.parameters())  # the shared fp32 model is untouched
    maps = resnet_feature_maps(rn, f['input'], precision='fp16')
    assert [m.dtype for m in maps] == [torch.float16] * 5
    assert loss_fn.per_image_layer_mse(f['enhanced'], f['input']).dtype == torch.float16  # MSE in fp16

    enhanced = f['enhanced'].clone().requires_grad_(True)
    loss = loss_fn(enhanced, f['input'])
    assert loss.dtype == torch.float16
    loss.backward()
    expected, expected_grad = f[f'identity_loss_{weights}'], f[f'identity_loss_{weights}_grad_enhanced']
    loss_bound, grad_bound = fp16_rounding_bounds(rn, f['enhanced'], f['input'], layer_weights)
    assert loss_bound < 0.1 * expected and grad_bound < 0.1 * expected_grad.norm().item()
    assert abs(loss.item() - expected) <= loss_bound
    assert (enhanced.grad - expected_grad).norm().item() <= grad_bound
    assert not torch.equal(enhanced.grad, expected_grad)  # it did run in fp16


@pytest.mark.parametrize('weights', ['default', 'ones'])
def test_identity_loss_in_fp16_equals_the_authors_fp16_loop(rn_file, rn, parity_fixtures, weights):
    """Image by image, the same fp16 tower computes the same maps in both; only how the MSEs are reduced and
    summed differs: each image's loss sums L = 5 fp16 terms (L + 2 roundings at most, relative to it, with
    the MSE's and the weighting's), and the gradients' upstream values differ by 2 u, which the backward
    pass carries with its own rounding (u sqrt(d) each way). A 1% error in the loss does not pass."""
    from cliplit_basicsr.clip.loading import fp16_weights_tower

    f, u = parity_fixtures, FP16_UNIT_ROUNDOFF
    layer_weights = f[f'identity_weights_{weights}'].tolist()
    loss_fn = CLIPLITIdentityLoss(layer_weights=layer_weights, clip_pretrained=rn_file, precision='fp16')
    depths = rn_map_depths(rn.visual)
    loss_rtol = (len(layer_weights) + 2) * u
    assert loss_rtol < 0.01
    for image, target in zip(f['enhanced'], f['input']):
        ours, theirs = (image[None].clone().requires_grad_(True) for _ in range(2))
        loss = loss_fn(ours, target[None])
        reference = authors_fp16_identity_loss(fp16_weights_tower(rn), theirs, target[None], layer_weights)
        assert loss.item() == pytest.approx(reference.item(), rel=loss_rtol)
        loss.backward()
        reference.backward()
        grad_rtol = (2 + 2 * max(depths) ** 0.5) * u
        assert (ours.grad - theirs.grad).norm() <= grad_rtol * theirs.grad.norm()


def test_identity_precision_auto_follows_the_device(rn_file):
    loss_fn = CLIPLITIdentityLoss(clip_pretrained=rn_file)
    assert loss_fn.precision_on(torch.device('cuda', 0)) == 'fp16'  # where users train: the authors' numerics
    assert loss_fn.precision_on(torch.device('cpu')) == 'fp32'
    assert CLIPLITIdentityLoss(clip_pretrained=rn_file, amp='bf16').precision_on(torch.device('cuda', 0)) == 'fp32'
    with pytest.raises(ValueError, match='exclude each other'):
        CLIPLITIdentityLoss(clip_pretrained=rn_file, amp='bf16', precision='fp16')


def test_prompt_image_features(prompt_features, parity_fixtures):
    for name in PROMPT_SETS:
        expected = parity_fixtures[f'prompt_feat_{name}']
        assert_matches(prompt_features[name].reshape(expected.shape), expected, f'prompt_feat_{name}')


def test_prompt_init_cross_entropy(prompt, prompt_features, parity_fixtures):
    f = parity_fixtures
    with torch.no_grad():
        logits = prompt_logits(torch.cat([prompt_features['backlit'], prompt_features['welllit']]), prompt())
    assert_matches(logits, f['ce_logits'], 'ce_logits')
    n_backlit, n_welllit = len(prompt_features['backlit']), len(prompt_features['welllit'])
    assert f['ce_labels'].tolist() == [0] * n_backlit + [1] * n_welllit
    # a pooled batch mixes the classes in any order: each image is scored against its own label
    mixed = torch.randperm(n_backlit + n_welllit, generator=torch.Generator().manual_seed(0))
    features = torch.cat([prompt_features['backlit'], prompt_features['welllit']])[mixed]
    loss = CLIPLITPromptInitLoss()(prompt(), features, f['ce_labels'][mixed])
    loss.backward()
    assert_matches(loss, f['ce_loss'], 'ce_loss')
    assert_matches(prompt.embedding.grad, f['ce_loss_grad_prompt_embedding'], 'ce_loss_grad_prompt_embedding')


def test_negative_scores(prompt, prompt_features, parity_fixtures):
    with torch.no_grad():
        text = prompt()
        for name in PROMPT_SETS:
            assert_matches(
                negative_scores(prompt_features[name], text), parity_fixtures[f'prob_neg_{name}'], f'prob_neg_{name}'
            )


@pytest.mark.parametrize('form, sets', [('rank2', PROMPT_SETS[:2]), ('rank3', PROMPT_SETS[:3]), ('rank4', PROMPT_SETS)])
def test_ranking_loss(prompt, prompt_features, parity_fixtures, form, sets):
    f = parity_fixtures
    loss_fn = CLIPLITPromptRankingLoss(margins={form: f[f'{form}_margins'].tolist()}, order='code')
    loss = loss_fn(prompt(), *[prompt_features[name] for name in sets])
    loss.backward()
    assert_matches(loss, f[f'{form}_loss'], f'{form}_loss')
    assert_matches(prompt.embedding.grad, f[f'{form}_loss_grad_prompt_embedding'], f'{form}_loss_grad_prompt_embedding')


def test_ranking_paper_order_swaps_the_outputs(prompt, prompt_features):
    """``order: paper`` ranks the previous output above the newest: the code order with the two swapped."""
    b, w, t, t1 = (prompt_features[name] for name in PROMPT_SETS)
    with torch.no_grad():
        text = prompt()
        paper = CLIPLITPromptRankingLoss(order='paper')(text, b, w, t, t1).item()
        assert paper == pytest.approx(CLIPLITPromptRankingLoss(order='code')(text, b, w, t1, t).item(), rel=1e-6)
        assert paper != pytest.approx(CLIPLITPromptRankingLoss(order='code')(text, b, w, t, t1).item(), rel=1e-3)


def test_authors_prompt_file_loads_exactly(parity_dir, vit_file, parity_fixtures):
    path = parity_dir / 'prompt_pair_authors_format.pth'
    embedding, eot_indices = read_prompt_file(path)
    assert torch.equal(embedding, parity_fixtures['prompt_embedding']) and eot_indices is None
    pair = CLIPLITPromptPair(
        clip_pretrained=vit_file, length_prompt=parity_fixtures['length_prompt'], init_file=str(path)
    )
    assert torch.equal(pair.embedding.detach(), parity_fixtures['prompt_embedding'])
    with torch.no_grad():
        assert_matches(pair(), parity_fixtures['text_features'], "text_features (authors' prompt file)")


def test_end_to_end_enhancement_objective(vit_file, rn_file, parity_fixtures):
    """The training script's enhancement objective through the training variant of the network."""
    from cliplit_basicsr.checkpoint import OFFICIAL_CHECKPOINT, load_checkpoint
    from cliplit_basicsr.network import CLIPLITNet

    f = parity_fixtures
    net = load_checkpoint(CLIPLITNet(padding='zeros'), OFFICIAL_CHECKPOINT.parent / 'init_enhancement_model.pth')
    clip_term_fn = CLIPLITEnhanceLoss(loss_weight=320, clip_pretrained=vit_file)
    identity_term_fn = CLIPLITIdentityLoss(loss_weight=25, clip_pretrained=rn_file, precision='fp32')
    final = torch.clamp(f['input'] / (net(f['input']) + 1e-9), 0, 1)
    clip_term = clip_term_fn(final, f['text_features'])
    identity_term = identity_term_fn(final, f['input'])
    loss = clip_term + 0.9 * identity_term
    loss.backward()
    assert_matches(clip_term, f['e2e_clip_term'], 'e2e_clip_term')
    assert_matches(identity_term, f['e2e_identity_term'], 'e2e_identity_term')
    assert_matches(loss, f['e2e_loss'], 'e2e_loss')
    grads = {name.replace('.', '_'): p.grad for name, p in net.named_parameters()}
    keys = [k for k in f if k.startswith('e2e_grad_')]
    assert keys
    for key in keys:
        assert_matches(grads[key[len('e2e_grad_') :]], f[key], key)
