"""Benchmark CLIP-LIT training inside BasicSR's real training loop (CPU or GPU), per phase.

    python scripts/bench_train.py                 # 1 timed iteration per network phase, 8+ per prompt phase
    python scripts/bench_train.py --iters 2 --prompt-iters 4 --images 48 --warmup-epochs 2
    python scripts/bench_train.py --quick         # tiny sizes: checks the script, figures mean nothing

It generates random JPEG "photos" (backlit and well-lit), writes an option file from
``options/train_cliplit.yml`` with full-size **random-weight** ViT-B/32 and RN101 (``clip_pretrained: ~``,
no download), the default batch sizes and resolutions, and a schedule of two rounds
(prompt init, reconstruction, enhancement, refinement ranking I_t, enhancement, refinement ranking I_t and
I_{t-1}) with ``--iters`` + 1 iterations per network phase (the first is warm-up; with ``--cuda-graphs``,
which sets ``train.cuda_graphs``, also the eager steps before the capture) and ``--prompt-iters`` timed ones
per prompt phase after ``--warmup-epochs`` epochs of its loader (kept CLIP features of recurring
images fill up over a long run, so the steady state is what counts),
then runs ``basicsr.train.train_pipeline`` in this process (on a CPU restarted first as the training
commands are, with glibc keeping freed memory) with timers around the model's steps and data
fetches. Printed per phase:

* s/iteration and iterations/s of the whole BasicSR iteration (data fetch + step + bookkeeping);
* data wait: time the iteration spent waiting for a batch (BasicSR's loader for network phases, the
  model's prompt loader for prompt phases), as a share of the iteration;
* the one-off pass that enhances the backlit set for I_t at the start of prompt refinement;
* step: the time inside the model's ``optimize_parameters`` (without waiting for a prompt batch or the
  I_t pass);
* loss-only: after each timed step, the same phase's losses and backward on random tensors in memory with
  the model's own modules (`loss_only_step`), timed in this process between the trainer's iterations, and
  the trainer's overhead over it: this CPU's speed drifts by tens of percent within minutes, so only
  interleaved timings compare;
* CLIP-core bench: ``scripts/bench_clip_losses.py``'s ``ours`` step of the same maths, run afterwards in
  a fresh process (``--no-loss-only`` skips both);
* peak RSS of the whole process tree (this process + data-loader workers), and peak PSS (shared pages
  counted once, so forked workers are not charged for the parent's models), polled by a separate
  process.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import yaml

from cliplit_basicsr.cpu_allocator import restart_keeping_freed_memory

REPO_ROOT = Path(__file__).resolve().parents[1]


def watch_memory(pid: int, out_file: str, period: float = 0.5, pss_every: int = 10) -> None:
    """Poll RSS (every ``period`` s) and PSS (every ``pss_every`` polls) of process ``pid`` and its children
    until it exits or this process is terminated; write the peaks (GiB) to ``out_file``. Runs as its own
    process: polling from a thread of the training process holds its GIL for every /proc parse and
    measurably slowed its steps. PSS is polled rarely: reading it walks the page tables of the 4 GiB
    training process (55 ms a poll) and, every 0.5 s, slowed its enhancement step by 7%."""
    import signal

    peaks = {'rss': 0.0, 'pss': 0.0, 'rss_by_process': []}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        root = psutil.Process(pid)
        polls = 0
        while root.is_running():
            rss, pss, polls = [], 0, polls + 1
            for proc in [root] + [p for p in root.children(recursive=True) if p.pid != os.getpid()]:
                try:
                    rss.append(proc.memory_info().rss / 2**30)
                    pss += proc.memory_full_info().pss if polls % pss_every == 0 else 0
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if sum(rss) > peaks['rss']:
                peaks.update(rss=sum(rss), rss_by_process=rss)
            peaks['pss'] = max(peaks['pss'], pss / 2**30)
            time.sleep(period)
    except psutil.NoSuchProcess:
        pass
    finally:
        Path(out_file).write_text(json.dumps(peaks))


def make_images(folder: Path, count: int, size: tuple, low: int, high: int, rng) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = size
        base = rng.integers(low, high, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth-ish content, JPEG-friendly
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'img{i:03d}.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def write_options(work: Path, args) -> Path:
    opt = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())
    prompt, warmup = args.prompt_iters, warmup_iterations(args)
    net = args.iters + warmup['reconstruction']
    opt.update(name='bench', num_gpu='auto', manual_seed=0)
    opt.pop('dist_params')
    opt['datasets'].pop('val')
    opt.pop('val')
    train_set, prompt_set = opt['datasets']['train'], opt['prompt_dataset']
    train_set['dataroot_backlit'] = prompt_set['dataroot_backlit'] = str(work / 'backlit')
    prompt_set['dataroot_welllit'] = str(work / 'welllit')
    if args.quick:
        train_set.update(image_size=64, batch_size_per_gpu=2)
        prompt_set.update(image_size=64, batch_size_per_gpu=4)
    clip = {'ViT-B-32-quickgelu': args.vit, 'RN101-quickgelu': args.rn}
    opt['network_prompt'].update(clip_model=args.vit_model, clip_pretrained=clip[args.vit_model])
    train = opt['train']
    for key in ('clip_opt', 'identity_opt', 'reconstruction_opt'):
        train[key]['clip_pretrained'] = clip[train[key]['clip_model']]
    train['network_amp'] = args.network_amp
    train['cuda_graphs'] = args.cuda_graphs
    opt['path']['pretrain_network_g'] = None  # run the reconstruction stage too
    # Round 2's refinement gets the same length as round 1's; training ends one iteration after it, since an
    # iteration's record closes at the next batch fetch.
    init, refinement = warmup['prompt_init'] + prompt, warmup['prompt_refinement r1'] + prompt
    train['total_iter'] = init + 3 * net + 2 * refinement + 1
    train['schedule'].update(
        prompt_init_iters=init,
        prompt_init_min_iters=0,
        reconstruction_iters=net,
        reconstruction_min_iters=0,
        restart_psnr=-1e9,
        enhancement_iters=net,
        enhancement_loss_threshold=1e18,
        prompt_refinement_iters=refinement,
        prompt_loss_threshold=1e18,
        check_period=1,
        prompt_check_period=1,
    )  # a best network every round: I_t exists
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    path = work / 'bench.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def loss_only_step(model, phase: str) -> None:
    """The losses of ``phase``'s step and their backward on random tensors already in memory, with the model's
    own networks, CLIP models and loss modules, and nothing else: no loader, no I_t lookup or augmentation, no
    optimizer step, no schedule (the maths of ``bench_clip_losses.py``'s ``ours`` steps). Gradients are
    dropped; the next training step starts from zeroed ones anyway."""
    import torch

    from cliplit_basicsr.models.micro_batch import backward_in_micro_batches
    from cliplit_basicsr.models.schedule import Phase

    generator = torch.Generator().manual_seed(0)
    if phase in ('reconstruction', 'enhancement'):
        network_phase = Phase(phase)
        lq = torch.rand(model.lq.shape, generator=generator).to(model.device)
        total = 'l_recon' if network_phase is Phase.RECONSTRUCTION else 'l_enhance'
        backward_in_micro_batches(
            lq, model.micro_batch, lambda part, share: model._network_terms(network_phase, part, share), total
        )
        model.net_g.zero_grad(set_to_none=True)
        return
    size = model.prompt_loaders.pairs.image_size
    batch = model.opt['prompt_dataset']['batch_size_per_gpu']  # images (initialisation) or tuples (ranking)
    sets = {'prompt_init': 1, 'prompt_refinement r1': 3, 'prompt_refinement r2': 4}[phase]
    prompt = model.get_bare_model(model.net_prompt)
    images = torch.rand(sets * batch, 3, size, size, generator=generator).to(model.device)
    features = prompt.encode_images(images)
    if phase == 'prompt_init':
        model.cri_prompt_init(prompt(), features, torch.arange(batch) % 2).backward()
    else:
        model.cri_ranking(prompt(), *features.split(batch)).backward()
    prompt.zero_grad(set_to_none=True)


def instrument(records, warmup: dict, skip_loss_only: bool):
    """Timers around the model's step, its prompt-batch fetches and BasicSR's batch fetches; after each step
    of a recorded phase, a timed `loss_only_step` (interleaved: this CPU's speed drifts within minutes)."""
    import torch
    from basicsr.data.prefetch_dataloader import CPUPrefetcher

    from cliplit_basicsr.models.cliplit_model import CLIPLITModel
    from cliplit_basicsr.models.kept_networks import KeptNetworks
    from cliplit_basicsr.models.prompt_loaders import PromptLoaders

    state = {
        'phase': None,
        'start': None,
        'stepped': False,
        'fetch': 0.0,
        'outputs': 0.0,
        'step': 0.0,
        'loss_only': 0.0,
    }
    step, fetch_prompt, enhance = CLIPLITModel.optimize_parameters, PromptLoaders.next_batch, KeptNetworks.outputs
    prefetch_next = CPUPrefetcher.next

    def synchronised() -> float:
        """Now, once the GPU has run what was queued: the step no longer waits for the device itself, so
        without this its GPU time would land in whichever later section reads a value."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def timed_next(self):
        """An iteration runs from the fetch of its BasicSR batch to the next fetch."""
        t = synchronised()
        if state['stepped'] and state['phase']:
            records[state['phase']].append(
                (
                    t - state['start'] - state['loss_only'],
                    state['fetch'],
                    state['outputs'],
                    state['step'],
                    state['loss_only'],
                )
            )
        batch = prefetch_next(self)
        state.update(start=t, stepped=False, fetch=time.perf_counter() - t, outputs=0.0)
        return batch

    def timed_step(self, current_iter):
        phase = self.schedule.phase.value
        if phase == 'prompt_refinement':
            phase += f' r{self.schedule.round}'  # round 1 ranks I_t; round 2 also I_{t-1}
        if phase == 'enhancement' and self.schedule.round > 1:
            phase = None  # round 2's enhancement only leads to the 4-set refinement
        t, fetched, outputs = synchronised(), state['fetch'], state['outputs']
        result = step(self, current_iter)
        waits = state['fetch'] - fetched + state['outputs'] - outputs  # prompt-batch wait, I_t pass
        state.update(phase=phase, stepped=True, step=synchronised() - t - waits)
        t = time.perf_counter()
        timed = phase and len(records[phase]) >= warmup[phase] and state['outputs'] == outputs
        if timed and not skip_loss_only:
            loss_only_step(self, phase)
        state['loss_only'] = time.perf_counter() - t  # taken out of the iteration's time
        return result

    def timed_fetch(self, phase):
        t = synchronised()
        batch = fetch_prompt(self, phase)
        state['fetch'] += synchronised() - t
        return batch

    def timed_outputs(self, slot, round_):
        cached = self._outputs.get(slot)
        t = synchronised()
        out = enhance(self, slot, round_)
        if self._outputs.get(slot) is not cached:  # the pass ran (not a cache hit)
            state['outputs'] += synchronised() - t
        return out

    CPUPrefetcher.next = timed_next
    CLIPLITModel.optimize_parameters = timed_step
    PromptLoaders.next_batch = timed_fetch
    KeptNetworks.outputs = timed_outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=1, help='timed iterations per network phase (after 1 warm-up)')
    parser.add_argument(
        '--prompt-iters', type=int, default=8, help='timed iterations per prompt phase (after the warm-up epochs)'
    )
    parser.add_argument(
        '--warmup-epochs',
        type=int,
        default=4,
        help="untimed epochs of the prompt loaders first (prompt init and round 1's refinement), "
        'so that the kept CLIP features are mostly filled, as in a long run',
    )
    parser.add_argument(
        '--images',
        type=int,
        default=32,
        help='backlit and well-lit images generated (a prompt epoch is images / 16 batches, '
        'and every epoch starts with an empty prefetch queue)',
    )
    parser.add_argument('--photo-size', type=int, nargs=2, default=[900, 1200], help='H W of generated photos')
    parser.add_argument('--vit', default=None, help="ViT weights (default: random, 'openai', or a file)")
    parser.add_argument('--rn', default=None, help="RN weights (default: random, 'openai', or a file)")
    parser.add_argument('--vit-model', default='ViT-B-32-quickgelu', help=argparse.SUPPRESS)
    parser.add_argument(
        '--network-amp', default=None, choices=['bf16', 'fp16'], help="train.network_amp (default: fp32, the authors')"
    )
    parser.add_argument(
        '--cuda-graphs', action='store_true', help='train.cuda_graphs: the network phases replay a CUDA graph'
    )
    parser.add_argument('--quick', action='store_true', help='tiny sizes (smoke test of this script)')
    parser.add_argument('--no-loss-only', action='store_true', help='skip the loss-only comparison steps')
    parser.add_argument('--watch', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        return watch_memory(int(args.watch[0]), args.watch[1])
    if args.quick:
        args.photo_size, args.images = [96, 128], 8

    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import torch

    if not torch.cuda.is_available():  # as cliplit-train starts a CPU run (no-op once done)
        restart_keeping_freed_memory()
    import basicsr.train

    if args.cuda_graphs and not torch.cuda.is_available():
        parser.error('--cuda-graphs: CUDA graphs need a CUDA GPU')

    from cliplit_basicsr.basicsr_compat import hosting_cliplit

    work = Path(tempfile.mkdtemp(prefix='cliplit_bench_'))
    rng = np.random.default_rng(0)
    make_images(work / 'backlit', args.images, tuple(args.photo_size), 0, 110, rng)
    make_images(work / 'welllit', args.images, tuple(args.photo_size), 90, 256, rng)
    option_file = write_options(work, args)

    records, warmup = defaultdict(list), warmup_iterations(args)
    instrument(records, warmup, args.no_loss_only)
    if torch.cuda.is_available():
        warm_patch_embedding(args.vit_model)
        torch.cuda.reset_peak_memory_stats()  # the peak printed is the training's
    memory_file = work / 'memory.json'
    watcher = subprocess.Popen([sys.executable, __file__, '--watch', str(os.getpid()), str(memory_file)])
    os.chdir(work)
    sys.argv = ['basicsr.train', '-opt', str(option_file)]
    started = time.perf_counter()
    with hosting_cliplit():  # as cliplit-train runs a CLIP-LIT option file
        basicsr.train.train_pipeline(str(work))
    wall = time.perf_counter() - started
    watcher.terminate()
    watcher.wait()
    memory = json.loads(memory_file.read_text())

    device = 'cuda' if torch.cuda.is_available() else f'cpu ({torch.get_num_threads()} threads)'
    print(
        f'\nCLIP-LIT training bench on {device}; photos {args.photo_size[0]}x{args.photo_size[1]} JPEG, '
        f'{args.images} backlit + {args.images} well-lit; random-weight CLIP; wall {wall:.0f} s'
    )
    fresh = {} if args.no_loss_only or args.quick else loss_only_seconds(work)
    print(
        f'{"phase":<23}{"iters":>6}{"s/iter":>9}{"iter/s":>9}{"data wait":>11}{"I_t pass (s)":>14}'
        f'{"step s/iter":>13}{"loss-only s/iter":>18}{"overhead":>10}{"CLIP-core bench":>17}'
    )
    seconds_per_iter = {}
    for phase, rows in records.items():
        outputs = sum(r[2] for r in rows)
        timed = [r for r in rows[warmup[phase] :] if r[2] == 0.0]  # skip warm-up and the I_t pass
        if not timed:
            continue
        total, wait, step, loss_only = (sum(r[k] for r in timed) / len(timed) for k in (0, 1, 3, 4))
        seconds_per_iter[phase] = total
        compared = '' if args.no_loss_only else f'{loss_only:>18.2f}{100 * (total / loss_only - 1):>+9.1f}%'
        reference = fresh.get(LOSS_ONLY_STEPS.get(phase))
        print(
            f'{phase:<23}{len(timed):>6}{total:>9.2f}{1 / total:>9.3f}{100 * wait / total:>10.1f}%'
            f'{outputs:>14.1f}{step:>13.2f}{compared}{f"{reference:>17.2f}" if reference else ""}'
        )
    if torch.cuda.is_available():
        print(f'peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB')
    print(projected_default_run(seconds_per_iter))
    by_process = ' + '.join(f'{gib:.2f}' for gib in memory['rss_by_process'])
    print(
        f'peak RSS of the process tree: {memory["rss"]:.2f} GiB (this process first, then its children: '
        f'{by_process}), sampled every 0.5 s; peak PSS: {memory["pss"]:.2f} GiB, sampled every 5 s'
    )


def warm_patch_embedding(model_name: str) -> None:
    """Run the ViT's patch embedding once for every batch size a prompt step can encode (1 to 64), under
    ``cudnn.benchmark`` as BasicSR's ``train_pipeline`` sets it. cuDNN times its algorithms at the first batch
    of each shape; a prompt step encodes only the images whose features are not kept, so a long run meets
    each size once, and the few timed steps here would otherwise pay for several (the steady state is what
    counts, as ``bench_clip_losses.py`` makes oneDNN's kernels first on a CPU)."""
    import open_clip
    import torch

    vision = open_clip.get_model_config(model_name)['vision_cfg']
    patch, size = vision['patch_size'], vision['image_size']
    conv = torch.nn.Conv2d(3, vision['width'], patch, patch, bias=False).cuda()
    torch.backends.cudnn.benchmark = True
    with torch.no_grad():
        for batch in range(1, 65):
            conv(torch.zeros(batch, 3, size, size, device='cuda'))


def projected_default_run(seconds_per_iter: dict) -> str:
    """The shipped option file's run (the authors' data, no phase extended) priced at this bench's s/iter:
    each stage's iterations times its phase's measured s/iter (a round's refinement at round 2's, which ranks
    both I_t and I_{t-1}, except round 1's)."""
    from cliplit_basicsr.models.run_length import PassLengths, authors_run
    from cliplit_basicsr.models.schedule import ScheduleOptions

    length = authors_run(
        ScheduleOptions(), PassLengths.of(380, 8, 380, 384, 16), prompt_init=True, reconstruction=False
    )
    total, missing = 0.0, set()
    for name, iterations in length.stages:
        if name == 'prompt initialisation':
            phase = 'prompt_init'
        elif name.endswith('enhancement'):
            phase = 'enhancement'
        else:
            phase = 'prompt_refinement r1' if name.startswith('round 1 ') else 'prompt_refinement r2'
        if phase in seconds_per_iter:
            total += iterations * seconds_per_iter[phase]
        else:
            missing.add(phase)
    note = f' (not measured: {", ".join(sorted(missing))})' if missing else ''
    return f'projected default run ({length.describe()}): {total / 3600:.2f} h{note}'


def warmup_iterations(args) -> dict:
    """Untimed first iterations of each recorded phase: 1 (network phases with ``--cuda-graphs``: also the
    eager warm-up steps and the capture), or ``--warmup-epochs`` epochs of the prompt loader of prompt
    initialisation and of the first refinement (the second finds the refinement loader warm)."""
    from cliplit_basicsr.models.graphed_step import WARMUP_STEPS

    network = dict.fromkeys(('reconstruction', 'enhancement'), 1 + WARMUP_STEPS * args.cuda_graphs)
    if args.quick:
        return defaultdict(lambda: 1, network)
    batch = yaml.safe_load((REPO_ROOT / 'options' / 'train_cliplit.yml').read_text())['prompt_dataset'][
        'batch_size_per_gpu'
    ]
    per_epoch = {'prompt_init': -(-2 * args.images // batch), 'prompt_refinement r1': -(-args.images // batch)}
    prompt = {phase: args.warmup_epochs * n for phase, n in per_epoch.items()}
    return defaultdict(lambda: 1, {**network, **prompt})


# the trainer's phases and the step of scripts/bench_clip_losses.py that computes the same losses
LOSS_ONLY_STEPS = {'prompt_init': 'init', 'enhancement': 'enhance', 'prompt_refinement r2': 'refine'}


def loss_only_seconds(work: Path) -> dict:
    """s/iteration of bench_clip_losses' ``ours`` steps at the default sizes, each in a fresh process, every
    prompt image encoded (``--no-feature-cache``: as the loss-only steps here; the trainer's kept features
    depend on how long it has run)."""
    seconds = {}
    for step in sorted(set(LOSS_ONLY_STEPS.values())):
        cmd = [
            sys.executable,
            str(REPO_ROOT / 'scripts' / 'bench_clip_losses.py'),
            '--child',
            'ours',
            step,
            '--grads-out',
            str(work / f'{step}.pt'),
            '--iters',
            '2' if step == 'enhance' else '5',
            '--no-feature-cache',
        ]
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE='1')
        )
        line = next((out for out in proc.stdout.splitlines() if out.startswith('RESULT ')), None)
        if line is None:
            sys.exit(f'bench_train: loss-only step {step} failed: {(proc.stderr.strip().splitlines() or ["?"])[-1]}')
        seconds[step] = json.loads(line[len('RESULT ') :])['sec_per_iter']
    return seconds


if __name__ == '__main__':
    main()
