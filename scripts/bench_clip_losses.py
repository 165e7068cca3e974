"""Benchmark CLIP-LIT's CLIP-side training steps against the authors' code structure (fp32, CPU by default).

Full-size ViT-B-32-quickgelu and RN101-quickgelu with random weights (no download). Three steps:

* ``enhance``: light-map network forward (CLIPLITNet, zero padding, init weights) on a batch of
  ``--batch`` images of ``--size``², CLIP-Enhance + identity, backward to the network;
* ``refine``: 4-tuple ranking, ``--prompt-batch`` images of ``--prompt-size``² per set, backward to the prompt;
* ``init``: prompt-initialisation cross-entropy on ``--prompt-batch`` images.

Prompt images are random base images under a fresh augmentation draw per iteration (the authors'
probabilities; one draw per index shared by the sets, as the training tuple shares it), made outside
the timing (loader work).
``ours`` keeps CLIP features of images that recur exactly (flips/transpose only, p = 0.49), as the
training model does (``train.prompt_feature_cache``), starting from the steady state of a long run: all 8
flip/transpose variants of every base image already kept (``--no-feature-cache``: none), and oneDNN's
kernels made for every batch size the timed steps encode (a long run has met each of the 65 sizes; the
first batch of a size costs 60-140 ms of kernel compilation, once per process).

Variants, each run in its own process so that its peak RSS (VmHWM: models + activations) is its own:

* ``authors``: the same maths structured as the authors' code: one image at a time through CLIP (ViT and
  RN101 ``encode_image`` per image, the input side too), text features recomputed for every prompt
  call (full 77 tokens), per-image similarity loops, autograd left on, and the five ViT-B/32 copies
  their modules each load (train.py, clip_score.py and three data loaders) held in memory; on a GPU
  the identity loss's RN101 in OpenAI's fp16 weights, as ``clip.load`` gave it to them there;
* ``ours``: this package's losses and prompt pair (one batched CLIP pass per image set, image features
  without autograd, text transformer up to the pooled token, one shared ViT and RN101), and the
  network as the training model builds it; the enhancement step runs
  forward/backward ``--micro-batch`` images at a time as the training model does (``train.micro_batch``,
  default ``auto``: one on CPU; gradients accumulate to the batch's). It runs in the process environment
  the training commands give themselves: glibc keeping freed memory
  (:func:`cliplit_basicsr.cpu_allocator.restart_keeping_freed_memory`);
* ``authors-kept`` (``--authors-keep-freed-memory``): ``authors`` in that same environment, to show how
  much of the speed-up that environment gives (the authors' scripts run with glibc's defaults);
* ``ours-bf16`` (``--bf16``): ``ours`` with ``amp: bf16`` for CLIP (on CPU the image towers run on a
  bf16 copy of their weights; the network stays fp32); its deviation from ``ours`` on losses and
  gradients is printed.

``--device cuda`` runs every variant on the GPU (the same structure; peak GPU memory instead of RSS), and
offers two more:

* ``ours-graphs`` (``--cuda-graphs``, enhance only): ``ours``' step captured once and replayed as a CUDA
  graph by :class:`cliplit_basicsr.models.graphed_step.GraphedStep`, as ``train.cuda_graphs`` runs it;
* ``ours-cl`` (``--channels-last``): ``ours`` with the CLIP towers (the fp16 RN copy included) in the
  channels-last memory format, to measure whether it pays before the training offers it.

A shared CPU's speed drifts by tens of percent within minutes: ``--rounds N`` runs every variant N times in
turn and prints medians (the speed-up is the ratio of the medians), with each round's figures below.

Example (small): ``python scripts/bench_clip_losses.py --batch 1 --size 256 --prompt-batch 4 --iters 1``.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cliplit_basicsr.cpu_allocator import KEEP_FREED_MEMORY, keep_freed_memory_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = ('enhance', 'refine', 'init')
N_VIT_COPIES_AUTHORS = 5


def peak_rss_gib() -> float:
    with open('/proc/self/status') as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith('VmHWM'))
    return kib / 2**20


# ----------------------------------------------------------------------------------------------- child side
def _models(variant, device):
    """(vit, rn, extra copies): random full-size CLIPs on ``device``, seeded so every variant gets the same
    weights (the losses and the prompt pair fetch these same models for the device)."""
    import torch

    from cliplit_basicsr.clip import RN_MODEL, VIT_MODEL, load_clip

    torch.manual_seed(0)
    vit = load_clip(VIT_MODEL, None, device)
    torch.manual_seed(1)
    rn = load_clip(RN_MODEL, None, device)
    copies = []
    if variant.startswith('authors'):
        import open_clip

        copies = [
            open_clip.create_model(VIT_MODEL, pretrained=None).eval().requires_grad_(False).to(device)
            for _ in range(N_VIT_COPIES_AUTHORS - 1)
        ]
    return vit, rn, copies


def _prompt_pair(amp):
    import torch

    from cliplit_basicsr.archs.prompt_arch import CLIPLITPromptPair

    pair = CLIPLITPromptPair(clip_pretrained=None, amp=amp)
    with torch.no_grad():  # a non-degenerate prompt: the X-embedding plus seeded noise
        pair.embedding.add_(0.02 * torch.randn(pair.embedding.shape, generator=torch.Generator().manual_seed(2)))
    return pair


class AuthorsStyle:
    """The authors' per-image structure (clip_score.py, train.py's Prompts/TextEncoder), on open_clip models."""

    def __init__(self, vit, rn, pair):
        import torch

        self.torch, self.vit, self.rn, self.pair = torch, vit, rn, pair

    def _pre(self, image):
        from cliplit_basicsr.clip import preprocess_images

        return preprocess_images(image.unsqueeze(0))

    def text_features(self):
        """Their TextEncoder: the whole 77-token sequence, pooled at the X-prompt's end token."""
        x = self.pair.embedding + self.vit.positional_embedding
        x = self.vit.ln_final(self.vit.transformer(x, attn_mask=self.vit.attn_mask))
        return x[self.torch.arange(2), self.pair.eot_indices] @ self.vit.text_projection

    def clip_score(self, images, text):
        score = 0
        for image in images:
            features = self.vit.encode_image(self._pre(image))
            sim = 100.0 * features / features.norm(dim=-1, keepdim=True) @ (text / text.norm(dim=-1, keepdim=True)).T
            score = score + sim.softmax(dim=-1)[0][0]
        return score / images.shape[0]

    def identity(self, pred, inp, weights):
        """Their RN101 ran in OpenAI's fp16 weights on a GPU (``clip.load`` on CUDA), in fp32 on a CPU."""
        from cliplit_basicsr.clip.loading import fp16_weights_tower

        tower, dtype = (fp16_weights_tower(self.rn), self.torch.float16) if pred.is_cuda else (self.rn.visual, None)
        score = 0
        for p, i in zip(pred, inp):
            pred_out = tower.forward_intermediates(self._pre(p).to(dtype))
            inp_out = tower.forward_intermediates(self._pre(i).to(dtype))
            score = score + sum(
                w * self.torch.nn.functional.mse_loss(a.squeeze(0), b.squeeze(0))
                for w, a, b in zip(weights, pred_out['image_intermediates'], inp_out['image_intermediates'])
            )
        return score

    def image_feature(self, image):
        features = self.vit.encode_image(self._pre(image))
        return features / features.norm(dim=-1, keepdim=True)

    def prompt_scores(self, features, softmax=True):
        text = self.text_features()  # recomputed at every call, as Prompts.forward does
        rows = []
        for f in features:
            sim = 100.0 * f @ (text / self.torch.norm(text, dim=-1, keepdim=True)).T
            rows.append(sim.softmax(dim=-1)[:, 0] if softmax else sim)
        return self.torch.cat(rows, dim=0)


def _augmentation_draws(n: int, count: int, seed: int) -> list:
    """``count`` collated augmentation draws for ``n`` indices, with the authors' probabilities (prompt zoom
    range); one draw per index is shared by all sets of a batch, as the training tuple shares it."""
    import numpy as np
    from torch.utils.data import default_collate

    from cliplit_basicsr.data.augment import draw_augmentation

    rng = np.random.default_rng(seed)
    return [default_collate([draw_augmentation((0.5, 1.5), rng).as_dict() for _ in range(n)]) for _ in range(count)]


def _augmented(base, aug):
    """(images by set, draws): every image of ``base`` ({set: (N,3,S,S)}) under its index's draw in ``aug``;
    made outside the timing (loader work)."""
    from cliplit_basicsr.data.augment import augment_batch

    return {s: augment_batch(images, aug) for s, images in base.items()}, aug


def _steady_state_cache(pair, base):
    """A :class:`FeatureCache` holding all 8 flip/transpose variants of every image of ``base``: the state a
    long run reaches (each training image is drawn hundreds of times), filled before timing."""
    from torch.utils.data import default_collate

    from cliplit_basicsr.data.augment import AugmentParams, augment_batch
    from cliplit_basicsr.models.feature_cache import FeatureCache

    cache = FeatureCache()
    for code in range(8):
        draw = AugmentParams(hflip=bool(code & 1), vflip=bool(code & 2), transpose=bool(code & 4)).as_dict()
        for s, images in base.items():
            aug = default_collate([draw] * len(images))
            cache.encode(pair.encode_images, augment_batch(images, aug), [(s, i, code) for i in range(len(images))])
    return cache


def _warm_kernels(pair, images, sizes) -> None:
    """Encode ``images[:size]`` once for every batch size in ``sizes``: oneDNN makes (JIT-compiles) its GEMM
    kernels at the first batch of each size, 60-140 ms for ViT-B/32, once per process and size."""
    for size in sorted(sizes - {0}):
        pair.encode_images(images[:size])


def turn_off(path: str) -> None:
    """Turn the fast path ``path`` (``--off``) off in this process, the others staying as they are."""
    import torch.nn.functional as F

    from cliplit_basicsr import accel
    from cliplit_basicsr.accel import class_token, fused_vit, text_blocks

    if path == 'fused_vit':
        fused_vit.fused_vit_tower = lambda visual: None
    elif path == 'class_token':
        class_token.class_token_tower = lambda visual: visual
    elif path == 'text_blocks':
        accel.text_transformer = lambda *args: None
    elif path == 'text_onednn':
        text_blocks.linear = F.linear
    elif path == 'bf16_tower':
        accel.bf16_image_tower = lambda *args: None
    else:
        raise ValueError(f'unknown fast path {path}')


def run_child(args) -> None:
    import torch

    for path in args.off or ():
        turn_off(path)
    from cliplit_basicsr.losses.cliplit_loss import (
        CLIPLITEnhanceLoss,
        CLIPLITIdentityLoss,
        CLIPLITPromptInitLoss,
        CLIPLITPromptRankingLoss,
    )
    from cliplit_basicsr.models.feature_cache import exact_variants

    variant, step = args.child
    device = torch.device(args.device)
    amp = 'bf16' if variant.endswith('bf16') else None
    vit, rn, copies = _models(variant, device)
    if variant == 'ours-cl':
        from cliplit_basicsr.clip.loading import fp16_weights_tower

        for tower in (vit.visual, rn.visual, fp16_weights_tower(rn)):
            tower.to(memory_format=torch.channels_last)
    pair = _prompt_pair(amp).to(device)
    authors = AuthorsStyle(vit, rn, pair) if variant.startswith('authors') else None
    gen = torch.Generator().manual_seed(3)
    result = {}
    warmup = args.warmup

    if step == 'enhance':
        from cliplit_basicsr.checkpoint import load_checkpoint
        from cliplit_basicsr.models.graphed_step import WARMUP_STEPS, GraphedStep
        from cliplit_basicsr.models.micro_batch import backward_in_micro_batches, batch_share
        from cliplit_basicsr.network import CLIPLITNet

        net = load_checkpoint(
            CLIPLITNet(padding='zeros'), REPO_ROOT / 'cliplit_basicsr' / 'weights' / 'init_enhancement_model.pth'
        ).to(device)
        x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
        clip_fn = CLIPLITEnhanceLoss(loss_weight=320.0, clip_pretrained=None, amp=amp)
        identity_fn = CLIPLITIdentityLoss(loss_weight=25.0, clip_pretrained=None, amp=amp)
        with torch.no_grad():
            text = authors.text_features() if authors else pair()

        def terms_of(part, share):
            final = torch.clamp(part / (net(part) + 1e-9), 0, 1)
            if authors:
                clip_term = 320.0 * authors.clip_score(final, text)
                identity_term = 25.0 * authors.identity(final, part, [1.0, 1.0, 1.0, 1.0, 0.5])
            else:
                clip_term = batch_share(clip_fn, clip_fn(final, text), share)
                identity_term = batch_share(identity_fn, identity_fn(final, part), share)
            return {'loss': clip_term + 0.9 * identity_term}

        batches = itertools.repeat(None)  # the input is made once

        def step_on(images):
            net.zero_grad(set_to_none=True)
            micro_batch = None if authors else args.micro_batch or None  # 0: the whole batch
            return backward_in_micro_batches(images, micro_batch, terms_of, 'loss')

        graphed = GraphedStep() if variant == 'ours-graphs' else None
        if graphed is not None:  # the timed iterations replay: warm-up and capture come first
            warmup += WARMUP_STEPS + 1

        def iteration(_):
            loss = (step_on(x) if graphed is None else graphed('enhance', x, step_on))['loss']
            return loss, {n: p.grad for n, p in net.named_parameters()}
    else:
        sets = ('backlit', 'welllit', 'it', 'it1') if step == 'refine' else ('backlit', 'welllit')
        n_per_set = args.prompt_batch if step == 'refine' else args.prompt_batch // 2
        base = {
            s: (torch.randint(0, 256, (n_per_set, 3, args.prompt_size, args.prompt_size), generator=gen) / 255.0).to(
                device
            )
            for s in sets
        }
        draws = _augmentation_draws(n_per_set, args.warmup + args.iters, seed=4)
        batches = (_augmented(base, aug) for aug in draws)
        rank_fn, init_fn = CLIPLITPromptRankingLoss(loss_weight=200.0), CLIPLITPromptInitLoss()
        cache = _steady_state_cache(pair, base) if variant.startswith('ours') and not args.no_feature_cache else None
        if cache is not None:  # a long run has met every batch size: oneDNN's kernels for them exist
            _warm_kernels(
                pair, torch.cat(list(base.values())), {len(sets) * exact_variants(aug).count(None) for aug in draws}
            )
        encoded = []

        def iteration(batch):
            images, aug = batch
            pair.zero_grad(set_to_none=True)
            if authors:  # features one image at a time (their data loaders), scores per prompt call
                feats = {s: [authors.image_feature(img) for img in images[s]] for s in sets}
                if step == 'refine':
                    s_b, s_w, s_t, s_t1 = (authors.prompt_scores(feats[s]) for s in sets)
                    ones = torch.ones_like(s_b)
                    rank = torch.nn.functional.margin_ranking_loss
                    loss = 200.0 * (
                        rank(s_b, s_w, ones, margin=0.9)
                        + rank(s_b, s_t, ones, margin=0.9)
                        + rank(s_t, s_t1, ones, margin=0.1)
                        + rank(s_t1, s_w, ones, margin=0.1)
                    )
                else:
                    logits = authors.prompt_scores(feats['backlit'] + feats['welllit'], softmax=False)
                    labels = torch.arange(len(logits), device=logits.device) >= n_per_set
                    loss = torch.nn.functional.cross_entropy(logits, labels.long())
            else:
                if cache is None:
                    feats = pair.encode_images(torch.cat([images[s] for s in sets]))
                    encoded.append(len(sets) * n_per_set)
                else:
                    keys = [
                        None if code is None else (s, i, code)
                        for s in sets
                        for i, code in enumerate(exact_variants(aug))
                    ]
                    feats = cache.encode(pair.encode_images, [images[s] for s in sets], keys)
                    encoded.append(keys.count(None))
                text = pair()
                if step == 'refine':
                    loss = rank_fn(text, *feats.split(n_per_set))
                else:
                    loss = init_fn(text, feats, (torch.arange(len(feats), device=device) >= n_per_set).long())
            loss.backward()
            return loss, {'embedding': pair.embedding.grad}

    def synchronised() -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return time.perf_counter()

    elapsed = 0.0
    for i in range(warmup + args.iters):
        batch = next(batches)
        start = synchronised()
        loss, grads = iteration(batch)
        elapsed += (synchronised() - start) * (i >= warmup)
    result['sec_per_iter'] = elapsed / args.iters
    if step != 'enhance' and variant.startswith('ours'):
        result['encoded_share'] = sum(encoded[-args.iters :]) / (args.iters * len(sets) * n_per_set)
    result['peak_rss_gib'] = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else peak_rss_gib()
    )
    result['loss'] = loss.item()
    torch.save({k: v.detach().float().clone() for k, v in grads.items()}, args.grads_out)
    del copies
    print('RESULT ' + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------- parent side
def _run_variant(args, variant, step, workdir, round_index=0):
    grads = Path(workdir) / f'{variant}-{step}-{round_index}.pt'
    cmd = [sys.executable, os.path.abspath(__file__), '--child', variant, step, '--grads-out', str(grads)]
    for flag in ('batch', 'size', 'prompt_batch', 'prompt_size', 'iters', 'warmup', 'micro_batch', 'device'):
        cmd += [f'--{flag.replace("_", "-")}', str(getattr(args, flag))]
    cmd += ['--no-feature-cache'] * args.no_feature_cache
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=f'{REPO_ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    if variant != 'authors':  # as the training commands run: see restart_keeping_freed_memory
        env = keep_freed_memory_environment(env) or env
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    line = next((out for out in proc.stdout.splitlines() if out.startswith('RESULT ')), None)
    if proc.returncode or line is None:
        sys.exit(f'bench_clip_losses: {variant}/{step} failed: {(proc.stderr.strip().splitlines() or ["?"])[-1]}')
    result = json.loads(line[len('RESULT ') :])
    # as it comes, so that a run stopped before its table still shows what it measured
    figures = ', '.join(f'{name} {value:.4g}' for name, value in result.items())
    print(f'  measured {step} {variant}: {figures}', file=sys.stderr, flush=True)
    result['grads'] = grads
    return result


def _deviation(a, b):
    """(relative loss deviation, max over gradients of max|a-b| / max|b|) of run a against run b."""
    import torch

    ga, gb = torch.load(a['grads']), torch.load(b['grads'])
    grad_dev = max(((ga[k] - gb[k]).abs().max() / gb[k].abs().max().clamp_min(1e-30)).item() for k in gb)
    return abs(a['loss'] - b['loss']) / max(abs(b['loss']), 1e-30), grad_dev


def main() -> None:
    import torch

    from cliplit_basicsr.models.micro_batch import auto_micro_batch

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', default=','.join(STEPS), help='comma-separated subset of enhance,refine,init')
    parser.add_argument('--batch', type=int, default=8, help='enhancement batch')
    parser.add_argument('--size', type=int, default=512, help='enhancement image side')
    parser.add_argument('--prompt-batch', type=int, default=16, help='prompt batch (per set for refine)')
    parser.add_argument('--prompt-size', type=int, default=256, help='prompt image side')
    parser.add_argument(
        '--micro-batch',
        type=int,
        default=None,
        help="ours, enhance: images per forward/backward, 0 = the whole batch (default: train.micro_batch's "
        'auto for --device: 1 on a CPU, the whole batch on a GPU)',
    )
    parser.add_argument('--iters', type=int, default=2, help='timed iterations per step')
    parser.add_argument('--warmup', type=int, default=1, help='untimed iterations first')
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='rounds, each running every variant once in turn; s/iter and speed-ups are medians',
    )
    parser.add_argument('--bf16', action='store_true', help='also run ours with amp: bf16 for CLIP')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda: where every variant runs')
    parser.add_argument('--cuda-graphs', action='store_true', help='cuda: also ours with its step as a CUDA graph')
    parser.add_argument('--channels-last', action='store_true', help='cuda: also ours with channels-last CLIP towers')
    parser.add_argument(
        '--authors-keep-freed-memory',
        action='store_true',
        help="also run the authors' structure with glibc keeping freed memory, as ours runs",
    )
    parser.add_argument(
        '--no-feature-cache',
        action='store_true',
        help='ours, prompt steps: encode every image (no kept features of recurring images)',
    )
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    parser.add_argument('--grads-out', help=argparse.SUPPRESS)
    parser.add_argument('--off', action='append', help=argparse.SUPPRESS)  # scripts/bench_fast_paths.py
    args = parser.parse_args()
    if args.micro_batch is None:
        args.micro_batch = auto_micro_batch(torch.device(args.device)) or 0
    if args.child:
        return run_child(args)
    steps = [s for s in args.steps.split(',') if s]
    if set(steps) - set(STEPS):
        parser.error(f'--steps: unknown {sorted(set(steps) - set(STEPS))}')
    if (args.cuda_graphs or args.channels_last) and args.device != 'cuda':
        parser.error('--cuda-graphs and --channels-last are measured on a GPU: add --device cuda')
    variants = ['authors'] + ['authors-kept'] * args.authors_keep_freed_memory + ['ours'] + ['ours-bf16'] * args.bf16
    variants += ['ours-graphs'] * args.cuda_graphs + ['ours-cl'] * args.channels_last
    targets = {'enhance': 3.0, 'refine': 10.0, 'init': 5.0}
    print(
        f'enhance: batch {args.batch} @ {args.size}; refine/init: batch {args.prompt_batch} @ {args.prompt_size}; '
        f'{args.iters} timed iteration(s) after {args.warmup} warm-up, median of {args.rounds} round(s); '
        f'{len(os.sched_getaffinity(0))} CPUs '
        f'(OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}); '
        f'ours: micro-batch {args.micro_batch}; ours runs with '
        f'{" ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items())} (as cliplit-train), authors without'
    )
    peak_label = 'peak GPU GiB' if args.device != 'cpu' else 'peak RSS GiB'
    header = (
        f'{"step":8} {"variant":12} {"s/iter":>8} {peak_label:>13} {"speed-up":>9} {"target":>7} '
        f'{"loss":>12} {"loss dev":>9} {"grad dev":>9} {"encoded":>8}'
    )
    print(header)
    print('-' * len(header))
    with tempfile.TemporaryDirectory() as workdir:
        for step in steps:
            ran = [v for v in variants if v != 'ours-graphs' or step == 'enhance']  # prompt steps change shape
            rounds = [{v: _run_variant(args, v, step, workdir, r) for v in ran} for r in range(args.rounds)]
            seconds = {v: statistics.median(r[v]['sec_per_iter'] for r in rounds) for v in ran}
            for variant in ran:
                run = rounds[0][variant]  # losses and gradients are the same in every round (seeded)
                speed = seconds['authors'] / seconds[variant]
                loss_dev, grad_dev = _deviation(run, rounds[0]['ours'] if variant != 'ours' else rounds[0]['authors'])
                target = f'{targets[step]:.0f}x' if variant == 'ours' else ''
                peak = max(r[variant]['peak_rss_gib'] for r in rounds)
                print(
                    f'{step:8} {variant:12} {seconds[variant]:8.2f} {peak:13.2f} {speed:8.2f}x '
                    f'{target:>7} {run["loss"]:12.6g} {loss_dev:9.1e} {grad_dev:9.1e} '
                    f'{"" if "encoded_share" not in run else format(run["encoded_share"], ".0%"):>8}',
                    flush=True,
                )
            if args.rounds > 1:
                print(
                    f'{"":8} per round, s/iter: '
                    + '; '.join(f'{v} {" ".join(format(r[v]["sec_per_iter"], ".2f") for r in rounds)}' for v in ran)
                )
                print(
                    f"{'':8} per round, ours' speed-up: "
                    + ' '.join(f'{r["authors"]["sec_per_iter"] / r["ours"]["sec_per_iter"]:.2f}x' for r in rounds)
                )
    print(
        'loss/grad dev: relative deviation from ours (authors, ours-*) or from authors (ours); '
        'grad dev = max over tensors of max|a-b|/max|b|. Target for enhance peak RSS: <= 8 GiB.\n'
        'encoded: share of the prompt images ours sent through CLIP; the others recur exactly (flips/transpose '
        'only) and their features were kept, as in a long run (--no-feature-cache: none kept).'
    )


if __name__ == '__main__':
    main()
