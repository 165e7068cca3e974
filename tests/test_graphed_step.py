"""``train.cuda_graphs`` on the CPU: the option's checks, and the replay protocol with a stand-in for CUDA's
capture (a "graph" that re-runs the step and asserts it reads the tensors it was captured with). The real
graphs run in ``tests/test_cuda.py``."""

import pytest
import torch
import yaml
from basicsr.utils import set_random_seed
from test_train_e2e import TOTAL_ITER, make_image_sets, network_batch, restored_model_fresh, write_options

from cliplit_basicsr.errors import OptionError
from cliplit_basicsr.models.graphed_step import GraphedStep, cuda_graphs_option, set_capturable


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_image_sets(tmp_path_factory.mktemp('data'), backlit_count=5, height_step=4)


def replaying_capture(watched=lambda: []):
    """A stand-in for :func:`capture_cuda_graph`: nothing runs at capture; each replay runs the step and
    writes its outputs into the tensors returned at capture, as a graph rewrites its memory. ``watched()``
    lists the tensors the step reads; a replay fails if any was replaced since the capture (a real graph
    would go on reading the old ones)."""
    captures = []

    def capture(fn):
        outputs, at_capture = {}, watched()  # the tensors themselves: a freed tensor's id can be reused
        captures.append(at_capture)

        def replay():
            now = watched()
            assert len(now) == len(at_capture) and all(a is b for a, b in zip(now, at_capture)), (
                'a tensor the graph reads was replaced'
            )
            for name, value in fn().items():
                outputs.setdefault(name, torch.empty_like(value)).copy_(value)

        return replay, outputs

    return capture, captures


def toy_step(model, optimizer):
    def step(images):
        optimizer.zero_grad()
        loss = model(images).square().mean()
        loss.backward()
        optimizer.step()
        return {'loss': loss.detach()}

    return step


def test_every_call_is_one_step_and_partial_batches_run_beside_the_graph():
    """Warm-up until a shape has run twice, capture, replays; a batch of another shape runs eagerly and the
    graph stays; a new key captures afresh. Every call is one step, the same as an eager loop's."""
    torch.manual_seed(0)
    plan = [  # (key, batch size, captured after the call)
        ('a', 4, False), ('a', 2, False), ('a', 4, False), ('a', 4, True), ('a', 2, True), ('a', 4, True),
        ('a', 6, True), ('a', 4, True), ('b', 6, False), ('b', 6, False), ('b', 6, True),
    ]  # fmt: skip
    models = [torch.nn.Linear(3, 2) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    steps = [toy_step(m, torch.optim.Adam(m.parameters(), lr=0.1)) for m in models]
    capture, captures = replaying_capture()
    graphed = GraphedStep(capture, warmup=2)
    returned = []
    for key, size, captured in plan:
        images = torch.randn(size, 3)
        returned.append(graphed(key, images, steps[1]))
        assert returned[-1]['loss'].item() == steps[0](images)['loss'].item()
        assert graphed.captured == captured
    assert len(captures) == graphed.captures == 2
    assert returned[3]['loss'] != returned[5]['loss']  # replays hand out copies, not the graph's memory
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def varied_network_batch(iteration: int, size: int = 2) -> dict:
    """A ``datasets.train`` batch of ``size`` of the 5 backlit images, different ones and draws at each
    iteration."""
    import numpy as np
    from torch.utils.data import default_collate

    from cliplit_basicsr.data.augment import draw_augmentation

    rng = np.random.default_rng(iteration)
    return default_collate(
        [{'index': (iteration + i) % 5, 'aug': draw_augmentation((0.5, 1.5), rng).as_dict()} for i in range(size)]
    )


@pytest.mark.slow
def test_graphed_training_equals_eager_through_every_phase(tmp_path, data_dir, parity_dir):
    """The tiny run's 16 iterations (every phase, the reconstruction restart, two rounds, a partial batch),
    step by step in the model with the stand-in capture: the same network and prompt as eager steps, and
    every captured step reads the Adam state and text features it was captured with (phase changes and the
    restart capture anew)."""
    option_file = write_options(tmp_path, data_dir, parity_dir)
    results, captures = [], None
    for graphed in (False, True):
        set_random_seed(5)
        model = restored_model_fresh(tmp_path / str(graphed), option_file)
        if graphed:

            def watched(model=model):
                state = [t for s in model.optimizer_g.state.values() for t in s.values() if torch.is_tensor(t)]
                return state + ([] if model._text_features is None else [model._text_features])

            capture, captures = replaying_capture(watched)
            model.graphed_step = GraphedStep(capture, warmup=1)
        # the restart's fresh network from the same draws (the first run in a process also draws as it loads CLIP)
        restart = model._restart_network
        model._restart_network = lambda restart=restart: (torch.manual_seed(7), restart())
        for iteration in range(1, TOTAL_ITER + 1):
            model.feed_data(varied_network_batch(iteration, size=1 if iteration == 6 else 2))  # 6: a partial batch
            model.optimize_parameters(iteration)
        results.append({k: v.clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()})
        results[-1]['prompt'] = model.get_bare_model(model.net_prompt).embedding.detach().clone()
    # warm-up 1: reconstruction (iters 3-7) captures at 4, runs 6's partial batch beside the graph and restarts
    # after it; enhancement (8-9, 12-13) captures at 9 and 13
    assert len(captures) == model.graphed_step.captures == 3
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize(
    'change,message',
    [
        ({'train': {'cuda_graphs': 'yes'}}, "expected true or false, got 'yes'"),
        ({}, 'needs a CUDA GPU; this run trains on cpu'),
        ({'dist': True}, 'runs without torchrun'),
        ({'num_gpu': 2}, 'captures one GPU: set num_gpu: 1'),
        ({'train': {'network_amp': 'fp16'}}, "fp16's gradient scaler reads back every step"),
        ({'train': {'compile_network': True}}, 'choose it or train.compile_network'),
        ({'train': {'scheduler': {'type': 'MultiStepLR'}}}, 'remove train.scheduler'),
        ({'train': {'warmup_iter': 100}}, 'remove train.warmup_iter'),
    ],
)
def test_runs_cuda_graphs_cannot_capture_are_refused_in_one_line(change, message):
    opt = {'dist': False, 'train': {'cuda_graphs': True}}
    opt['train'].update(change.get('train', {}))
    opt.update({k: v for k, v in change.items() if k != 'train'})
    device = 'cpu' if change == {} else 'cuda'
    with pytest.raises(OptionError, match=r'^train\.cuda_graphs: ') as err:
        cuda_graphs_option(opt['train']['cuda_graphs'], opt, torch.device(device))
    assert message in str(err.value) and '\n' not in str(err.value)
    assert cuda_graphs_option(False, opt, torch.device('cpu')) is False


def test_the_option_is_checked_when_the_model_is_built(tmp_path, data_dir, parity_dir):
    option_file = write_options(tmp_path, data_dir, parity_dir)
    with pytest.raises(OptionError, match='train.cuda_graphs: needs a CUDA GPU; this run trains on cpu'):
        restored_model_fresh(tmp_path, option_file, lambda opt: opt['train'].update(cuda_graphs=True))


def test_a_resumed_run_uses_its_own_adam_form(tmp_path, data_dir, parity_dir):
    """A state saved by a CUDA-graph run (capturable Adam) resumes on a CPU, where capturable Adam fails."""
    from test_train_e2e import restored_model

    def network_phases_first(opt):  # the options' start is prompt initialisation, which leaves optim_g alone
        opt['path']['pretrain_network_g'] = 'init'
        opt['path']['pretrain_network_prompt'] = None
        opt['train']['schedule']['prompt_learning'] = False
        del opt['prompt_dataset']

    option_file = write_options(tmp_path, data_dir, parity_dir)
    edited = yaml.safe_load(option_file.read_text())
    network_phases_first(edited)
    option_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    model = restored_model_fresh(tmp_path, option_file)
    model.feed_data(network_batch(2))
    model.optimize_parameters(1)
    assert model.optimizer_g.state  # Adam stepped: its state (and step count) is saved
    model.save(0, 1)
    state_file = next(tmp_path.rglob('1.state'))
    state = torch.load(state_file, weights_only=True)
    for group in state['optimizers'][0]['param_groups']:
        group['capturable'] = True
    torch.save(state, state_file)
    resumed = restored_model(tmp_path, option_file, state_file)
    assert not any(group['capturable'] for group in resumed.optimizer_g.param_groups)
    steps = [state['step'] for state in resumed.optimizer_g.state.values()]
    assert steps and all(step.device.type == 'cpu' and step.item() == 1 for step in steps)
    resumed.feed_data(network_batch(2))
    resumed.optimize_parameters(2)  # capturable Adam would refuse the CPU's parameters
    assert all(state['step'].item() == 2 for state in resumed.optimizer_g.state.values())


def test_set_capturable_moves_the_step_count():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones(2)
    optimizer.step()
    set_capturable(optimizer, True)
    assert optimizer.param_groups[0]['capturable'] and optimizer.state[param]['step'].dtype == torch.float32
    set_capturable(optimizer, False)
    optimizer.step()
    assert optimizer.state[param]['step'].item() == 2
