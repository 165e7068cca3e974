"""The networks behind I_t and I_{t-1}, and their enhanced versions of the backlit training set.

The authors' enhancement phase saves its best network of the round, and the next prompt refinement ranks
that network's outputs (I_t) and the previous round's (I_{t-1}): their ``inference`` writes the whole
backlit training set, enhanced at 256x256, as PNG files at each new best, and the ranking loader reads
them back. Here the best network of each of the two result slots is kept in memory (a 279k-parameter
snapshot), and when a refinement phase needs a slot's outputs, that network enhances the backlit training
set once, at prompt resolution, quantised to 8 bits as the PNGs were (:meth:`KeptNetworks.outputs`). Each
prompt batch then picks its images by backlit index and applies the batch's own augmentation draw, so
(I_b, I_t, I_{t-1}, I_w) share one draw as in the authors' loader. Running the kept networks on every
prompt batch instead would cost two 16 x 256² network forwards a step against one pass over the training
set a round.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger

from cliplit_basicsr.data.resident import ResidentImages
from cliplit_basicsr.engine.maths import light_to_output, quantise
from cliplit_basicsr.network import CLIPLITNet

State = Dict[str, torch.Tensor]
INFERENCE_BATCH = 8  # images per forward when enhancing the training set


class KeptNetworks:
    """Two result slots, each the best network of a round, and the slots' enhanced training sets.

    Args:
        backlit: gives the prompt set's resident backlit images (at the prompt size), what the kept
            networks enhance; called when outputs are first needed.
        padding: the padding variant of the network being trained.
        device: where the kept networks run and their outputs are kept.
    """

    def __init__(self, backlit: Callable[[], ResidentImages], padding: str, device: torch.device) -> None:
        self.backlit, self.padding, self.device = backlit, padding, device
        self.states: List[Optional[State]] = [None, None]
        self._outputs: Dict[int, Tuple[int, torch.Tensor]] = {}  # slot -> (round, uint8 (N,3,S,S) on the device)

    def snapshot(self, slot: int, net: torch.nn.Module) -> None:
        """Keep a copy of ``net``'s weights in ``slot``."""
        self.states[slot] = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def has_outputs(self, slot: int, round_: int) -> bool:
        """Whether ``slot``'s outputs for ``round_`` are made already."""
        cached = self._outputs.get(slot)
        return cached is not None and cached[0] == round_

    @torch.no_grad()
    def outputs(self, slot: int, round_: int) -> torch.Tensor:
        """The backlit training set enhanced by ``slot``'s network, the best of ``round_`` (made once per
        round): uint8 (N,3,S,S) on the device, by backlit index."""
        if self.has_outputs(slot, round_):
            return self._outputs[slot][1]
        net = CLIPLITNet(padding=self.padding).to(self.device)
        net.load_state_dict(self.states[slot])
        enhanced, backlit = [], self.backlit()
        for start in range(0, len(backlit), INFERENCE_BATCH):
            x = backlit.take(torch.arange(start, min(start + INFERENCE_BATCH, len(backlit))))
            # the authors' inference (no eps), stored as their PNG round trip stores it
            enhanced.append(quantise(light_to_output(x, net(x)), 255).to(torch.uint8))
        self._outputs[slot] = (round_, torch.cat(enhanced))
        get_root_logger().info(
            f'Enhanced {len(self._outputs[slot][1])} backlit images with the best network of round {round_} '
            f'(slot {slot})'
        )
        return self._outputs[slot][1]

    def state_dict(self) -> List[Optional[State]]:
        """The kept weights on the CPU (the enhanced outputs are made again after a resume)."""
        return [None if s is None else {k: v.cpu() for k, v in s.items()} for s in self.states]

    def load_state_dict(self, states: Sequence[Optional[State]]) -> None:
        self.states = [None if s is None else {k: v.to(self.device) for k, v in s.items()} for s in states]
        self._outputs = {}

    def of_round(self, round_: int, slot_rounds: Sequence[Optional[int]]) -> Optional[State]:
        """The kept weights of ``round_``'s best network, if a slot still holds them."""
        return self.states[list(slot_rounds).index(round_)] if round_ in slot_rounds else None
